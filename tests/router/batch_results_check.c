/* SPDX-License-Identifier: MIT */
#include "batch_results_check.h"
#include "rt_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

results_verdict_t batch_results_check(const char *body, size_t len)
{
    char *out = malloc(len + 1);
    rt_result_t got[RESULTS_CHECK_MAX];
    int n = out ? msm__rt_results_scan(body, len, out, got, RESULTS_CHECK_MAX) : -1;
    results_verdict_t v = n < 0 ? RESULTS_LEFT : RESULTS_AGREE;
    if (n >= 0) {
        json_t *root = json_loadb(body, len, 0, NULL);
        json_t *results = json_object_get(root, "results");
        if (!json_is_array(results) || json_array_size(results) != (size_t)n)
            v = RESULTS_DIFFER;
        for (int i = 0; v == RESULTS_AGREE && i < n; i++) {
            json_t *r = json_array_get(results, (size_t)i);
            if (!same(got[i].id, json_string_value(json_object_get(r, "id"))) ||
                !same(got[i].status, json_string_value(json_object_get(r, "status"))))
                v = RESULTS_DIFFER;
        }
        json_decref(root);
    }
    free(out);
    return v;
}
