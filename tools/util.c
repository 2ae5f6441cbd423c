/* Messages, argument parsing and byte encodings for the shmsync tool. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>

#include "shmsync.h"
#include "tool.h"

const char *tool_cmd;

void tool_err(const char *fmt, ...)
{
	va_list ap;
	char line[1024];
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per message, so lines of concurrent processes stay whole. */
	if (tool_cmd)
		fprintf(stderr, "shmsync: %s: %s\n", tool_cmd, line);
	else
		fprintf(stderr, "shmsync: %s\n", line);
}

int tool_parse_uint(const char *what, const char *s, unsigned long long min, unsigned long long max,
		    unsigned long long *out)
{
	/* strtoull accepts "-1" (wrapping it) and leading blanks: refuse both. */
	if (!s || !isdigit((unsigned char)s[0])) {
		tool_err("%s: '%s' is not a number (expected %llu..%llu)", what, s ? s : "", min, max);
		return -1;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end) {
		tool_err("%s: '%s' is not a number (expected %llu..%llu)", what, s, min, max);
		return -1;
	}
	if (v < min || v > max) {
		tool_err("%s: %llu is out of range (expected %llu..%llu)", what, v, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

int tool_parse_int64(const char *what, const char *s, int64_t *out)
{
	const char *d = s && (s[0] == '-' || s[0] == '+') ? s + 1 : s;
	if (!d || !isdigit((unsigned char)d[0])) {
		tool_err("%s: '%s' is not an integer", what, s ? s : "");
		return -1;
	}
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (*end) {
		tool_err("%s: '%s' is not an integer", what, s);
		return -1;
	}
	if (errno == ERANGE) {
		tool_err("%s: '%s' does not fit in a signed 64-bit integer", what, s);
		return -1;
	}
	*out = (int64_t)v;
	return 0;
}

int tool_parse_numa(const char *s, int *policy, int *node)
{
	unsigned long long n;
	*node = 0;
	if (strcmp(s, "interleave") == 0) {
		*policy = SHMSYNC_NUMA_INTERLEAVE;
	} else if (strcmp(s, "none") == 0) {
		*policy = SHMSYNC_NUMA_NONE;
	} else if (strncmp(s, "bind:", 5) == 0) {
		/* The kernel's bound on node numbers (MAX_NUMNODES at most 1024). */
		if (tool_parse_uint("--numa bind:NODE", s + 5, 0, 1023, &n) < 0)
			return -1;
		*policy = SHMSYNC_NUMA_BIND;
		*node = (int)n;
	} else {
		tool_err("--numa: interleave, bind:NODE or none, not '%s'", s);
		return -1;
	}
	return 0;
}

int tool_parse_size(const char *what, const char *s, size_t *out)
{
	if (!s || !isdigit((unsigned char)s[0])) {
		tool_err("%s: '%s' is not a size (bytes, with an optional K, M, G or T suffix)", what,
			 s ? s : "");
		return -1;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K':
			shift = 10;
			break;
		case 'M':
			shift = 20;
			break;
		case 'G':
			shift = 30;
			break;
		case 'T':
			shift = 40;
			break;
		default:
			shift = 99;
		}
		end++;
		/* "64M", "64MB" and "64MiB" all mean the binary unit. */
		if (shift != 99 && (strcasecmp(end, "B") == 0 || strcasecmp(end, "iB") == 0))
			end += strlen(end);
	}
	if (errno || *end || shift == 99) {
		tool_err("%s: '%s' is not a size (bytes, with an optional K, M, G or T suffix)", what, s);
		return -1;
	}
	if (v == 0 || v > (SIZE_MAX >> shift)) {
		tool_err("%s: '%s' is out of range", what, s);
		return -1;
	}
	*out = (size_t)(v << shift);
	return 0;
}

int tool_parse_seconds(const char *what, const char *s, double min, double max, double *out)
{
	if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '.')) {
		tool_err("%s: '%s' is not a number of seconds", what, s ? s : "");
		return -1;
	}
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !isfinite(v)) {
		tool_err("%s: '%s' is not a number of seconds", what, s);
		return -1;
	}
	if (v < min || v > max) {
		tool_err("%s: %s is out of range (expected %g..%g seconds)", what, s, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(int c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

static int decode_hex(const char *what, const char *s, uint8_t *out, size_t *len)
{
	size_t n = strlen(s);
	if (n % 2) {
		tool_err("%s: '%s' is not hex (an even number of digits 0-9, a-f)", what, s);
		return -1;
	}
	for (size_t i = 0; i < n; i += 2) {
		int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0) {
			tool_err("%s: '%s' is not hex (an even number of digits 0-9, a-f)", what, s);
			return -1;
		}
		out[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return 0;
}

/* Padding is optional on input (some encoders drop it), but what is there
 * must be in the right place. */
static int decode_b64(const char *what, const char *s, uint8_t *out, size_t *len)
{
	size_t n = strlen(s), o = 0, pad = 0;
	while (pad < 2 && n > pad && s[n - 1 - pad] == '=')
		pad++;
	size_t body = n - pad;
	if ((pad && n % 4) || body % 4 == 1)
		goto bad;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < body; i++) {
		int v = b64val((unsigned char)s[i]);
		if (v < 0)
			goto bad;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Leftover bits must be zero, so each byte string has one spelling. */
	if (acc & ((1u << bits) - 1))
		goto bad;
	*len = o;
	return 0;
bad:
	tool_err("%s: '%s' is not base64", what, s);
	return -1;
}

/* The escapes tool_write prints, read back, so what ls, get and watch print
 * can be given as an argument again. Anything else after a backslash is an
 * error, not a literal backslash: a typo must not name another key. */
static int decode_text(const char *what, const char *s, uint8_t *out, size_t *len)
{
	size_t o = 0;
	for (size_t i = 0; s[i]; i++) {
		if (s[i] != '\\') {
			out[o++] = (uint8_t)s[i];
			continue;
		}
		if (s[i + 1] == '\\') {
			out[o++] = '\\';
			i++;
			continue;
		}
		int hi = s[i + 1] == 'x' ? hexval((unsigned char)s[i + 2]) : -1;
		int lo = hi >= 0 ? hexval((unsigned char)s[i + 3]) : -1;
		if (lo < 0) {
			tool_err("%s: '%s': a backslash starts \\\\ or \\xNN (--raw takes the argument as "
				 "it is)",
				 what, s);
			return -1;
		}
		out[o++] = (uint8_t)(hi << 4 | lo);
		i += 3;
	}
	*len = o;
	return 0;
}

int tool_decode(enum tool_enc enc, const char *what, const char *s, uint8_t **out, size_t *len)
{
	size_t n = strlen(s);
	uint8_t *buf = malloc(n + 1);
	if (!buf) {
		tool_err("out of memory");
		return -1;
	}
	int rc = 0;
	switch (enc) {
	case ENC_TEXT:
		rc = decode_text(what, s, buf, len);
		break;
	case ENC_HEX:
		rc = decode_hex(what, s, buf, len);
		break;
	case ENC_BASE64:
		rc = decode_b64(what, s, buf, len);
		break;
	}
	if (rc < 0) {
		free(buf);
		return -1;
	}
	buf[*len] = 0;
	*out = buf;
	return 0;
}

/* Writes into a memory stream or a file alike: the encoders below are the
 * only place the formats are spelled out. */
void tool_write(FILE *f, enum tool_enc enc, bool raw, bool escape_space, const void *p, size_t n)
{
	const uint8_t *b = p;
	switch (enc) {
	case ENC_TEXT:
		if (raw) {
			fwrite(b, 1, n, f);
			return;
		}
		for (size_t i = 0; i < n; i++) {
			if (b[i] == '\\')
				fputs("\\\\", f);
			else if (b[i] < 0x20 || b[i] > 0x7e || (escape_space && b[i] == ' '))
				fprintf(f, "\\x%02x", b[i]);
			else
				fputc(b[i], f);
		}
		return;
	case ENC_HEX:
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%02x", b[i]);
		return;
	case ENC_BASE64:
		for (size_t i = 0; i < n; i += 3) {
			uint32_t v = (uint32_t)b[i] << 16;
			if (i + 1 < n)
				v |= (uint32_t)b[i + 1] << 8;
			if (i + 2 < n)
				v |= b[i + 2];
			fputc(b64[v >> 18 & 63], f);
			fputc(b64[v >> 12 & 63], f);
			fputc(i + 1 < n ? b64[v >> 6 & 63] : '=', f);
			fputc(i + 2 < n ? b64[v & 63] : '=', f);
		}
		return;
	}
}

char *tool_encode(enum tool_enc enc, const void *p, size_t n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	tool_write(f, enc, false, false, p, n);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

const char *tool_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int64_t tool_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int tool_socket(const char *given, const char **out)
{
	const char *s = given;
	const char *from = "--socket";
	if (!s) {
		s = getenv("SHMSYNC_SOCKET");
		from = "SHMSYNC_SOCKET";
	}
	if (!s || !*s) {
		tool_err("no socket: give --socket PATH or set SHMSYNC_SOCKET");
		return -1;
	}
	if (strlen(s) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		tool_err("%s: '%s' is too long for a unix socket path (at most %zu bytes)", from, s,
			 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return -1;
	}
	*out = s;
	return 0;
}

int tool_repl_option(enum tool_repl_opt which, const char *arg, struct shmsync_root_opts *ro)
{
	unsigned long long u;
	double secs;
	size_t bytes;
	switch (which) {
	case TOOL_REPL_REPLICATE:
	case TOOL_REPL_FOLLOW:
		if (strncmp(arg, "nats://", 7) != 0 && strncmp(arg, "tls://", 6) != 0) {
			tool_err("--%s: NATS URLs look like nats://HOST:PORT[,nats://HOST:PORT...], not '%s'",
				 which == TOOL_REPL_REPLICATE ? "replicate" : "follow", arg);
			return -1;
		}
		*(which == TOOL_REPL_REPLICATE ? &ro->replicate : &ro->follow) = arg;
		return 0;
	case TOOL_REPL_STREAM:
		ro->stream = arg;
		return 0;
	case TOOL_REPL_DURABLE:
		ro->durable = 1;
		return 0;
	case TOOL_REPL_REPLICAS:
		if (tool_parse_uint("--replicas", arg, 1, 5, &u) < 0)
			return -1;
		ro->replicas = (unsigned)u;
		return 0;
	case TOOL_REPL_LEASE:
		if (tool_parse_seconds("--lease", arg, 0.1, 3600, &secs) < 0)
			return -1;
		ro->lease_ns = (int64_t)(secs * 1e9);
		return 0;
	case TOOL_REPL_SNAP_TICKS:
		if (tool_parse_uint("--snapshot-ticks", arg, 1, UINT32_MAX, &u) < 0)
			return -1;
		ro->snapshot_ticks = u;
		return 0;
	case TOOL_REPL_SNAP_BYTES:
		if (tool_parse_size("--snapshot-bytes", arg, &bytes) < 0)
			return -1;
		ro->snapshot_bytes = bytes;
		return 0;
	case TOOL_REPL_WINDOW:
		if (tool_parse_uint("--repl-window", arg, 1, 65536, &u) < 0)
			return -1;
		ro->repl_window = (unsigned)u;
		return 0;
	}
	return -1;
}

int tool_repl_check(const struct shmsync_root_opts *ro)
{
	if ((ro->replicate || ro->follow) && !ro->stream) {
		tool_err("--%s needs --stream NAME", ro->replicate ? "replicate" : "follow");
		return -1;
	}
	if (ro->replicate && ro->follow) {
		tool_err("--replicate and --follow exclude each other: a root leads or follows");
		return -1;
	}
	if (!ro->replicate && !ro->follow &&
	    (ro->stream || ro->durable || ro->replicas || ro->lease_ns || ro->snapshot_ticks ||
	     ro->snapshot_bytes || ro->repl_window)) {
		tool_err("--stream, --durable, --replicas, --lease, --snapshot-* and --repl-window need "
			 "--replicate or --follow");
		return -1;
	}
	return 0;
}
