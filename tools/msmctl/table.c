/* SPDX-License-Identifier: MIT */
/* Human output: aligned tables of JSON objects and "name: value" listings. Columns are
 * chosen from the names a command prefers, so fields the frontend adds later are simply
 * not shown (the --json output has everything). */
#include "msmctl.h"

#include "msm/json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLUMNS 16
#define MAX_CELL    60

char *ctl_cell(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("-");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return msm_json_dump(v, NULL);
}

/* Cells longer than MAX_CELL end in "..." so one long filter cannot wreck the table. */
static void clip(char *s)
{
    if (strlen(s) > MAX_CELL)
        memcpy(s + MAX_CELL - 3, "...", 4);
}

static int any_row_has(json_t *rows, const char *name)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (json_object_get(row, name))
            return 1;
    }
    return 0;
}

static void print_upper(FILE *out, const char *s, int width)
{
    int n = 0;
    for (; *s; s++, n++)
        fputc(toupper((unsigned char)*s), out);
    if (width > n)
        fprintf(out, "%*s", width - n, "");
}

void ctl_print_table(FILE *out, json_t *rows, const char *const *columns)
{
    const char *cols[MAX_COLUMNS];
    int ncols = 0;
    for (int i = 0; columns[i] && ncols < MAX_COLUMNS; i++) {
        if (any_row_has(rows, columns[i]))
            cols[ncols++] = columns[i];
    }
    size_t nrows = json_array_size(rows);
    if (nrows == 0 || ncols == 0) {
        fprintf(out, "(none)\n");
        return;
    }
    char **cells = calloc(nrows * (size_t)ncols, sizeof(*cells));
    int width[MAX_COLUMNS];
    if (!cells)
        return;
    for (int j = 0; j < ncols; j++)
        width[j] = (int)strlen(cols[j]);
    for (size_t i = 0; i < nrows; i++) {
        for (int j = 0; j < ncols; j++) {
            char *s = ctl_cell(json_object_get(json_array_get(rows, i), cols[j]));
            if (s) {
                clip(s);
                if ((int)strlen(s) > width[j])
                    width[j] = (int)strlen(s);
            }
            cells[i * (size_t)ncols + (size_t)j] = s;
        }
    }
    for (int j = 0; j < ncols; j++) {
        print_upper(out, cols[j], j + 1 < ncols ? width[j] + 2 : 0);
    }
    fputc('\n', out);
    for (size_t i = 0; i < nrows; i++) {
        for (int j = 0; j < ncols; j++) {
            const char *s = cells[i * (size_t)ncols + (size_t)j];
            if (j + 1 < ncols)
                fprintf(out, "%-*s  ", width[j], s ? s : "?");
            else
                fprintf(out, "%s", s ? s : "?");
        }
        fputc('\n', out);
    }
    for (size_t i = 0; i < nrows * (size_t)ncols; i++)
        free(cells[i]);
    free(cells);
}

static int skipped(const char *name, const char *const *skip)
{
    for (int i = 0; skip && skip[i]; i++) {
        if (strcmp(skip[i], name) == 0)
            return 1;
    }
    return 0;
}

void ctl_print_object(FILE *out, const json_t *obj, const char *const *skip)
{
    int w = 0;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)obj, name, v)
    {
        if (!skipped(name, skip) && (int)strlen(name) > w)
            w = (int)strlen(name);
    }
    json_object_foreach((json_t *)obj, name, v)
    {
        if (skipped(name, skip))
            continue;
        char *s = ctl_cell(v);
        fprintf(out, "%-*s  %s\n", w + 1, name, s ? s : "?");
        free(s);
    }
}

json_t *ctl_list_items(json_t *answer, const char *member)
{
    if (json_is_array(answer))
        return json_incref(answer);
    if (!json_is_object(answer))
        return NULL;
    json_t *a = json_object_get(answer, member);
    if (json_is_array(a))
        return json_incref(a);
    const char *name;
    json_t *v;
    json_object_foreach(answer, name, v)
    {
        if (json_is_array(v))
            return json_incref(v);
    }
    /* {"orders": {...}, "clicks": {...}}: the names are the keys. */
    json_t *items = json_array();
    json_object_foreach(answer, name, v)
    {
        if (!json_is_object(v))
            continue;
        json_t *row = json_deep_copy(v);
        if (!json_object_get(row, "name"))
            json_object_set_new(row, "name", json_string(name));
        json_array_append_new(items, row);
    }
    return items;
}
