/* SPDX-License-Identifier: MIT */
/* TEMPORARY until the AVRO type lands: it refuses to compile. */
#include "schema_int.h"

#include "msm/err.h"

#include <stdio.h>

static int refuse(const char *text, size_t len, const char *message_name, void **impl,
                  char **canonical, char **resolved_name, char *err, size_t err_size)
{
    (void)text, (void)len, (void)message_name, (void)impl, (void)canonical, (void)resolved_name;
    snprintf(err, err_size, "schema type not available in this build");
    return MSM_ERR_INVALID;
}

const msm_schema_ops_t msm_schema_avro_ops = {.compile = refuse};
