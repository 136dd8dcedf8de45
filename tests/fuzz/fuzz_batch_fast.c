/* SPDX-License-Identifier: MIT */
/* Differential: whatever the lambda SDK's fast batch body reader takes, the jansson path must
 * read into the same events (tests/lambda/batch_fast_check.c); anything else it must decline. */
#include "../lambda/batch_fast_check.c"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[200];
    if (batch_fast_check((const char *)data, size, why, sizeof(why)) == BATCH_DIFFERS) {
        fprintf(stderr, "fast batch reader differs: %s\n", why);
        abort();
    }
    return 0;
}
