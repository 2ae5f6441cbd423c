# The plots of bench/peers (gnuplot-nox): run.sh calls
#   gnuplot -e "resdir='RESULTS'; outdir='DIR'" bench/peers/plots.gp
# after report.py wrote RESULTS/series.gp (the plot commands over its .dat
# files) and the .dat files themselves.
if (!exists("resdir") || !exists("outdir")) {
	print "plots.gp: set resdir and outdir with -e"
	exit status 2
}
load resdir."/series.gp"
set terminal pngcairo size 1000,750 font "sans,10" noenhanced
set grid
set rmargin 8
set key below left maxrows 6 width -2

# 1. Propagation round trip, CDF, log time axis.
set output outdir."/peers_prop_cdf.png"
set title "Propagation round trip (A writes, B sees and answers, A sees): CDF over the round trip in µs (log scale)\n".title_note
set logscale x 10
set format x "%g µs"
set ylabel "fraction of round trips"
set yrange [0:1]
eval cdf_cmd
unset logscale x
set yrange [*:*]

# 2. Throughput against the number of processes, writes and reads.
set output outdir."/peers_throughput.png"
set terminal pngcairo size 1000,1200 font "sans,10" noenhanced
set multiplot layout 2,1 title "Throughput against the number of processes (log scale)\n".title_note
set logscale y 10
set xrange [0.8:2.2]
set xtics 1
set format y "%.0s%c"
set format x "%g proc."
set ylabel "writes/s, visible to a reader"
set title "Writes into ".keys_label." keys in random order, each batch committed before the next; x: writer processes"
eval write_cmd
set ylabel "gets/s, all readers"
set title "Point lookups over ".keys_label." keys (uniform; hot set of 1K keys); x: reader processes"
eval read_cmd
unset multiplot
unset logscale y
set format y "%g"
set format x "%g"
set xrange [*:*]
set xtics autofreq

# 3. Memory over the churn, with the held snapshot marked.
set output outdir."/peers_memory.png"
set terminal pngcairo size 1000,750 font "sans,10" noenhanced
set title "Bytes in use under directory create/delete churn (16 keys a directory, 64 live), over create/delete cycles;\none reader holds a snapshot between the dashed lines. ".title_note
set ylabel "MiB in use (see each system's measure)"
set arrow 1 from hold_from, graph 0 to hold_from, graph 1 nohead dt 2 lc rgb "gray40"
set arrow 2 from hold_to, graph 0 to hold_to, graph 1 nohead dt 2 lc rgb "gray40"
eval mem_cmd
