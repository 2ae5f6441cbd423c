/* Bytes that depend on a seed and their position, for the segment tests
 * (test_segment, test_hostile): fill writes them, check says whether p
 * holds them (1) or not (0). */
#ifndef SHMSYNC_BYTEPATTERN_H
#define SHMSYNC_BYTEPATTERN_H

#include <stddef.h>
#include <stdint.h>

void fill(uint8_t *p, size_t n, unsigned seed);
int check(const uint8_t *p, size_t n, unsigned seed);

#endif
