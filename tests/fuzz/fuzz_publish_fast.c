/* SPDX-License-Identifier: MIT */
/* Differential: whatever the fast JSON batch parser accepts, the full parser must accept
 * with the same events (tests/frontend/fast_parse_check.c); anything else it must decline. */
#include "../frontend/fast_parse_check.c"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[200];
    if (fast_parse_check((const char *)data, size, why, sizeof(why)) == FAST_DIFFERS) {
        fprintf(stderr, "fast parser differs: %s\n", why);
        abort();
    }
    return 0;
}
