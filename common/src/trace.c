/* SPDX-License-Identifier: MIT */
/* W3C trace context: the traceparent's format. */
#include "msm/trace.h"

#include <string.h>

/* Whether the @p n characters at @p s are lower-case hex; *all_zero says whether all are '0'. */
static int hex_run(const char *s, size_t n, int *all_zero)
{
    *all_zero = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        if (c != '0')
            *all_zero = 0;
    }
    return 1;
}

int msm_traceparent_valid(const char *tp)
{
    size_t n = tp ? strlen(tp) : 0;
    int zero;
    if (n < MSM_TRACEPARENT_LEN || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return 0;
    if (!hex_run(tp, 2, &zero) || strncmp(tp, "ff", 2) == 0)
        return 0;
    if (strncmp(tp, "00", 2) == 0 ? n != MSM_TRACEPARENT_LEN
                                  : (n > MSM_TRACEPARENT_LEN && tp[MSM_TRACEPARENT_LEN] != '-'))
        return 0;
    if (!hex_run(tp + 3, 32, &zero) || zero || !hex_run(tp + 36, 16, &zero) || zero)
        return 0;
    return hex_run(tp + 53, 2, &zero);
}
