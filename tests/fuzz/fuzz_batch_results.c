/* SPDX-License-Identifier: MIT */
/* Differential: whatever the router's one-pass reading of a batch answer takes, jansson must
 * read the same results (tests/router/batch_results_check.c); it may give up on anything. */
#include "../router/batch_results_check.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (batch_results_check((const char *)data, size) == RESULTS_DIFFER) {
        fprintf(stderr, "the fast reading of a batch answer differs from jansson's\n");
        abort();
    }
    return 0;
}
