/* bytepattern.h: the byte pattern of the segment tests. */
#include "bytepattern.h"

void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131u + i * 7u + 1u);
}

int check(const uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)(seed * 131u + i * 7u + 1u))
			return 0;
	return 1;
}
