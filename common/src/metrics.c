/* SPDX-License-Identifier: MIT */
/* Prometheus registry: families under a registry mutex, children in a per-family hash table
 * (created once, never moved or freed before the registry), values in C11 atomics so that
 * any thread may update them while the loop thread renders. */
#include "msm/metrics.h"
#include "msm/err.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double msm_metrics_default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t msm_metrics_default_nbuckets =
    sizeof(msm_metrics_default_buckets) / sizeof(msm_metrics_default_buckets[0]);

struct msm_metric_child_s {
    msm_metric_t *ch_family;
    msm_metric_child_t *ch_next;  /* creation order, for rendering */
    msm_metric_child_t *ch_hnext; /* hash chain */
    uint64_t ch_hash;
    const char *ch_values[MSM_METRICS_MAX_LABELS]; /* point into this allocation */
    _Atomic uint64_t ch_value;                     /* counter count, or gauge double bits */
    _Atomic uint64_t ch_sum_bits;                  /* histogram sum, double bits */
    _Atomic uint64_t ch_buckets[];                 /* histogram: nbuckets + 1 (+Inf) */
};

struct msm_metric_s {
    msm_metrics_t *mf_reg;
    msm_metric_t *mf_next;
    msm_metric_type_t mf_type;
    char *mf_name;
    char *mf_help;
    size_t mf_nlabels;
    char *mf_labels[MSM_METRICS_MAX_LABELS];
    size_t mf_nbuckets;
    double *mf_buckets;
    pthread_mutex_t mf_lock; /* guards the child list and table */
    msm_metric_child_t *mf_head, *mf_tail;
    msm_metric_child_t **mf_table;
    size_t mf_tsize, mf_nchildren;
    msm_metric_child_t *mf_solo;
};

typedef struct {
    msm_metrics_collect_cb *co_cb;
    void *co_opaque;
} collector_t;

struct msm_metrics_s {
    pthread_mutex_t mr_lock; /* guards the family list and the collectors */
    msm_metric_t *mr_head, *mr_tail;
    collector_t *mr_collectors;
    size_t mr_ncollectors;
};

/* ---- doubles in atomics ---- */

static uint64_t dbits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- validation ---- */

static int valid_metric_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static int valid_label_name(const char *s)
{
    if (!s || !*s || (s[0] == '_' && s[1] == '_'))
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---- registry ---- */

msm_metrics_t *msm_metrics_new(void)
{
    msm_metrics_t *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    if (pthread_mutex_init(&reg->mr_lock, NULL) != 0) {
        free(reg);
        return NULL;
    }
    return reg;
}

static void family_free(msm_metric_t *fam)
{
    msm_metric_child_t *c = fam->mf_head;
    while (c) {
        msm_metric_child_t *next = c->ch_next;
        free(c);
        c = next;
    }
    for (size_t i = 0; i < fam->mf_nlabels; i++)
        free(fam->mf_labels[i]);
    pthread_mutex_destroy(&fam->mf_lock);
    free(fam->mf_table);
    free(fam->mf_buckets);
    free(fam->mf_name);
    free(fam->mf_help);
    free(fam);
}

void msm_metrics_free(msm_metrics_t *reg)
{
    if (!reg)
        return;
    msm_metric_t *fam = reg->mr_head;
    while (fam) {
        msm_metric_t *next = fam->mf_next;
        family_free(fam);
        fam = next;
    }
    pthread_mutex_destroy(&reg->mr_lock);
    free(reg->mr_collectors);
    free(reg);
}

static msm_metric_child_t *child_create(msm_metric_t *fam, const char *const *values, uint64_t h);

/* Same type, labels and buckets: a second registration of the same family is not an error. */
static int family_same(const msm_metric_t *fam, msm_metric_type_t type, size_t nlabels,
                       const char *const *labels, size_t nbuckets, const double *buckets)
{
    if (fam->mf_type != type || fam->mf_nlabels != nlabels || fam->mf_nbuckets != nbuckets)
        return 0;
    for (size_t i = 0; i < nlabels; i++) {
        if (strcmp(fam->mf_labels[i], labels[i]) != 0)
            return 0;
    }
    for (size_t i = 0; i < nbuckets; i++) {
        if (fam->mf_buckets[i] != buckets[i])
            return 0;
    }
    return 1;
}

static int family_register(msm_metrics_t *reg, msm_metric_type_t type, const char *name,
                           const char *help, const char *const *label_names,
                           const double *buckets, size_t nbuckets, msm_metric_t **out)
{
    msm_metric_t *fam = NULL;
    size_t nlabels = 0;
    *out = NULL;
    if (!reg || !valid_metric_name(name))
        return MSM_ERR_INVALID;
    for (; label_names && label_names[nlabels]; nlabels++) {
        const char *l = label_names[nlabels];
        if (nlabels == MSM_METRICS_MAX_LABELS || !valid_label_name(l))
            return MSM_ERR_INVALID;
        if (type == MSM_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
            return MSM_ERR_INVALID;
        for (size_t j = 0; j < nlabels; j++) {
            if (strcmp(label_names[j], l) == 0)
                return MSM_ERR_INVALID;
        }
    }
    if (type == MSM_METRIC_HISTOGRAM) {
        if (!buckets && nbuckets == 0) {
            buckets = msm_metrics_default_buckets;
            nbuckets = msm_metrics_default_nbuckets;
        }
        if (!buckets || nbuckets == 0 || nbuckets > MSM_METRICS_MAX_BUCKETS)
            return MSM_ERR_INVALID;
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                return MSM_ERR_INVALID;
        }
    } else {
        nbuckets = 0;
    }

    pthread_mutex_lock(&reg->mr_lock);
    for (msm_metric_t *f = reg->mr_head; f; f = f->mf_next) {
        if (strcmp(f->mf_name, name) == 0) {
            int same = family_same(f, type, nlabels, label_names, nbuckets, buckets);
            pthread_mutex_unlock(&reg->mr_lock);
            if (!same)
                return MSM_ERR_EXISTS;
            *out = f;
            return MSM_OK;
        }
    }

    fam = calloc(1, sizeof(*fam));
    if (!fam)
        goto fail;
    if (pthread_mutex_init(&fam->mf_lock, NULL) != 0) {
        free(fam);
        fam = NULL;
        goto fail;
    }
    fam->mf_reg = reg;
    fam->mf_type = type;
    fam->mf_name = strdup(name);
    fam->mf_help = strdup(help ? help : "");
    if (!fam->mf_name || !fam->mf_help)
        goto fail;
    for (size_t i = 0; i < nlabels; i++) {
        fam->mf_labels[i] = strdup(label_names[i]);
        if (!fam->mf_labels[i])
            goto fail;
        fam->mf_nlabels = i + 1;
    }
    if (nbuckets) {
        fam->mf_buckets = malloc(nbuckets * sizeof(double));
        if (!fam->mf_buckets)
            goto fail;
        memcpy(fam->mf_buckets, buckets, nbuckets * sizeof(double));
        fam->mf_nbuckets = nbuckets;
    }
    if (nlabels == 0) {
        fam->mf_solo = child_create(fam, NULL, 0);
        if (!fam->mf_solo)
            goto fail;
        fam->mf_head = fam->mf_tail = fam->mf_solo;
    }
    if (reg->mr_tail)
        reg->mr_tail->mf_next = fam;
    else
        reg->mr_head = fam;
    reg->mr_tail = fam;
    pthread_mutex_unlock(&reg->mr_lock);
    *out = fam;
    return MSM_OK;
fail:
    pthread_mutex_unlock(&reg->mr_lock);
    if (fam)
        family_free(fam);
    return MSM_ERR_NOMEM;
}

int msm_metrics_counter(msm_metrics_t *reg, const char *name, const char *help,
                        const char *const *label_names, msm_metric_t **out)
{
    return family_register(reg, MSM_METRIC_COUNTER, name, help, label_names, NULL, 0, out);
}

int msm_metrics_gauge(msm_metrics_t *reg, const char *name, const char *help,
                      const char *const *label_names, msm_metric_t **out)
{
    return family_register(reg, MSM_METRIC_GAUGE, name, help, label_names, NULL, 0, out);
}

int msm_metrics_histogram(msm_metrics_t *reg, const char *name, const char *help,
                          const char *const *label_names, const double *buckets,
                          size_t nbuckets, msm_metric_t **out)
{
    return family_register(reg, MSM_METRIC_HISTOGRAM, name, help, label_names, buckets,
                           nbuckets, out);
}

const char *msm_metric_name(const msm_metric_t *fam)
{
    return fam->mf_name;
}

/* ---- children ---- */

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ull;
        }
        h ^= 0xff; /* separator, so ("ab","c") and ("a","bc") differ */
        h *= 1099511628211ull;
    }
    return h;
}

/* Called with the family lock held (or before the family is published). */
static msm_metric_child_t *child_create(msm_metric_t *fam, const char *const *values, uint64_t h)
{
    size_t nb = fam->mf_type == MSM_METRIC_HISTOGRAM ? fam->mf_nbuckets + 1 : 0;
    size_t strl = 0;
    for (size_t i = 0; i < fam->mf_nlabels; i++)
        strl += strlen(values[i]) + 1;
    size_t head = sizeof(msm_metric_child_t) + nb * sizeof(_Atomic uint64_t);
    msm_metric_child_t *c = calloc(1, head + strl);
    if (!c)
        return NULL;
    c->ch_family = fam;
    c->ch_hash = h;
    atomic_init(&c->ch_value, 0);
    atomic_init(&c->ch_sum_bits, dbits(0.0));
    for (size_t i = 0; i < nb; i++)
        atomic_init(&c->ch_buckets[i], 0);
    char *s = (char *)c + head;
    for (size_t i = 0; i < fam->mf_nlabels; i++) {
        size_t l = strlen(values[i]) + 1;
        memcpy(s, values[i], l);
        c->ch_values[i] = s;
        s += l;
    }
    return c;
}

static int table_grow(msm_metric_t *fam)
{
    size_t nsize = fam->mf_tsize ? fam->mf_tsize * 2 : 16;
    msm_metric_child_t **t = calloc(nsize, sizeof(*t));
    if (!t)
        return MSM_ERR_NOMEM;
    for (msm_metric_child_t *c = fam->mf_head; c; c = c->ch_next) {
        size_t b = c->ch_hash & (nsize - 1);
        c->ch_hnext = t[b];
        t[b] = c;
    }
    free(fam->mf_table);
    fam->mf_table = t;
    fam->mf_tsize = nsize;
    return MSM_OK;
}

msm_metric_child_t *msm_metric_labelsv(msm_metric_t *fam, const char *const *values)
{
    if (!fam)
        return NULL;
    size_t n = 0;
    while (values && values[n]) {
        if (++n > fam->mf_nlabels)
            return NULL;
    }
    if (n != fam->mf_nlabels)
        return NULL;
    if (n == 0)
        return fam->mf_solo;

    uint64_t h = hash_values(values, n);
    msm_metric_child_t *c = NULL;
    pthread_mutex_lock(&fam->mf_lock);
    if (fam->mf_tsize) {
        for (c = fam->mf_table[h & (fam->mf_tsize - 1)]; c; c = c->ch_hnext) {
            if (c->ch_hash != h)
                continue;
            size_t i = 0;
            while (i < n && strcmp(c->ch_values[i], values[i]) == 0)
                i++;
            if (i == n)
                break;
        }
    }
    if (!c) {
        if (fam->mf_nchildren >= fam->mf_tsize / 2 && table_grow(fam) != MSM_OK)
            goto out;
        c = child_create(fam, values, h);
        if (!c)
            goto out;
        size_t b = h & (fam->mf_tsize - 1);
        c->ch_hnext = fam->mf_table[b];
        fam->mf_table[b] = c;
        if (fam->mf_tail)
            fam->mf_tail->ch_next = c;
        else
            fam->mf_head = c;
        fam->mf_tail = c;
        fam->mf_nchildren++;
    }
out:
    pthread_mutex_unlock(&fam->mf_lock);
    return c;
}

msm_metric_child_t *msm_metric_labels(msm_metric_t *fam, ...)
{
    const char *values[MSM_METRICS_MAX_LABELS + 1];
    size_t n = 0;
    va_list ap;
    va_start(ap, fam);
    for (;;) {
        const char *v = va_arg(ap, const char *);
        if (!v)
            break;
        if (n == MSM_METRICS_MAX_LABELS) {
            va_end(ap);
            return NULL;
        }
        values[n++] = v;
    }
    va_end(ap);
    values[n] = NULL;
    return msm_metric_labelsv(fam, values);
}

msm_metric_child_t *msm_metric_solo(msm_metric_t *fam)
{
    return fam ? fam->mf_solo : NULL;
}

/* ---- updates ---- */

static int is_type(const msm_metric_child_t *c, msm_metric_type_t type)
{
    return c && c->ch_family->mf_type == type;
}

void msm_counter_inc(msm_metric_child_t *c)
{
    msm_counter_add(c, 1);
}

void msm_counter_add(msm_metric_child_t *c, uint64_t n)
{
    if (is_type(c, MSM_METRIC_COUNTER))
        atomic_fetch_add_explicit(&c->ch_value, n, memory_order_relaxed);
}

void msm_gauge_set(msm_metric_child_t *c, double v)
{
    if (is_type(c, MSM_METRIC_GAUGE))
        atomic_store_explicit(&c->ch_value, dbits(v), memory_order_relaxed);
}

void msm_gauge_add(msm_metric_child_t *c, double v)
{
    if (is_type(c, MSM_METRIC_GAUGE))
        atomic_add_double(&c->ch_value, v);
}

void msm_gauge_inc(msm_metric_child_t *c)
{
    msm_gauge_add(c, 1.0);
}

void msm_gauge_dec(msm_metric_child_t *c)
{
    msm_gauge_add(c, -1.0);
}

void msm_histogram_observe(msm_metric_child_t *c, double v)
{
    if (!is_type(c, MSM_METRIC_HISTOGRAM))
        return;
    const msm_metric_t *fam = c->ch_family;
    /* Upper bounds are inclusive (le); NaN fails every comparison and lands in +Inf. */
    size_t lo = 0, hi = fam->mf_nbuckets;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= fam->mf_buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&c->ch_buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&c->ch_sum_bits, v);
}

uint64_t msm_counter_value(const msm_metric_child_t *c)
{
    if (!is_type(c, MSM_METRIC_COUNTER))
        return 0;
    return atomic_load_explicit(&((msm_metric_child_t *)c)->ch_value, memory_order_relaxed);
}

double msm_gauge_value(const msm_metric_child_t *c)
{
    if (!is_type(c, MSM_METRIC_GAUGE))
        return 0;
    return bitsd(atomic_load_explicit(&((msm_metric_child_t *)c)->ch_value, memory_order_relaxed));
}

uint64_t msm_histogram_count(const msm_metric_child_t *c)
{
    if (!is_type(c, MSM_METRIC_HISTOGRAM))
        return 0;
    msm_metric_child_t *m = (msm_metric_child_t *)c;
    uint64_t n = 0;
    for (size_t i = 0; i <= c->ch_family->mf_nbuckets; i++)
        n += atomic_load_explicit(&m->ch_buckets[i], memory_order_relaxed);
    return n;
}

double msm_histogram_sum(const msm_metric_child_t *c)
{
    if (!is_type(c, MSM_METRIC_HISTOGRAM))
        return 0;
    return bitsd(
        atomic_load_explicit(&((msm_metric_child_t *)c)->ch_sum_bits, memory_order_relaxed));
}

/* ---- collectors ---- */

int msm_metrics_add_collector(msm_metrics_t *reg, msm_metrics_collect_cb *cb, void *opaque)
{
    pthread_mutex_lock(&reg->mr_lock);
    collector_t *c = realloc(reg->mr_collectors, (reg->mr_ncollectors + 1) * sizeof(*c));
    if (!c) {
        pthread_mutex_unlock(&reg->mr_lock);
        return MSM_ERR_NOMEM;
    }
    c[reg->mr_ncollectors].co_cb = cb;
    c[reg->mr_ncollectors].co_opaque = opaque;
    reg->mr_collectors = c;
    reg->mr_ncollectors++;
    pthread_mutex_unlock(&reg->mr_lock);
    return MSM_OK;
}

void msm_metrics_remove_collector(msm_metrics_t *reg, msm_metrics_collect_cb *cb, void *opaque)
{
    pthread_mutex_lock(&reg->mr_lock);
    for (size_t i = 0; i < reg->mr_ncollectors; i++) {
        if (reg->mr_collectors[i].co_cb == cb && reg->mr_collectors[i].co_opaque == opaque) {
            memmove(&reg->mr_collectors[i], &reg->mr_collectors[i + 1],
                    (reg->mr_ncollectors - i - 1) * sizeof(collector_t));
            reg->mr_ncollectors--;
            break;
        }
    }
    pthread_mutex_unlock(&reg->mr_lock);
}

/* ---- rendering ---- */

typedef struct {
    char *b_p;
    size_t b_len, b_cap;
    int b_oom;
} buf_t;

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->b_oom || b->b_len + more + 1 <= b->b_cap)
        return;
    size_t cap = b->b_cap ? b->b_cap : 4096;
    while (cap < b->b_len + more + 1)
        cap *= 2;
    char *p = realloc(b->b_p, cap);
    if (!p) {
        b->b_oom = 1;
        return;
    }
    b->b_p = p;
    b->b_cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->b_oom)
        return;
    memcpy(b->b_p + b->b_len, s, n);
    b->b_len += n;
    b->b_p[b->b_len] = '\0';
}

static void buf_puts(buf_t *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_putc(buf_t *b, char c)
{
    buf_put(b, &c, 1);
}

/* Escapes backslash and newline (HELP), and also the double quote (label values). */
static void buf_escaped(buf_t *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_put(b, "\\\\", 2);
        else if (*s == '\n')
            buf_put(b, "\\n", 2);
        else if (quote && *s == '"')
            buf_put(b, "\\\"", 2);
        else
            buf_putc(b, *s);
    }
}

/* The shortest of %.15g / %.17g that reads back exactly; Prometheus spellings for specials. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(out, n, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, n, "%.17g", v);
}

static void buf_double(buf_t *b, double v)
{
    char tmp[40];
    fmt_double(tmp, sizeof(tmp), v);
    buf_puts(b, tmp);
}

static void buf_u64(buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    buf_put(b, tmp, (size_t)n);
}

/* `{a="x",b="y"` plus an optional `le` pair, then `}`; nothing when there are no labels. */
static void buf_labels(buf_t *b, const msm_metric_child_t *c, const char *le)
{
    const msm_metric_t *fam = c->ch_family;
    if (fam->mf_nlabels == 0 && !le)
        return;
    buf_putc(b, '{');
    for (size_t i = 0; i < fam->mf_nlabels; i++) {
        if (i)
            buf_putc(b, ',');
        buf_puts(b, fam->mf_labels[i]);
        buf_put(b, "=\"", 2);
        buf_escaped(b, c->ch_values[i], 1);
        buf_putc(b, '"');
    }
    if (le) {
        if (fam->mf_nlabels)
            buf_putc(b, ',');
        buf_puts(b, "le=\"");
        buf_puts(b, le);
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static void render_child(buf_t *b, const msm_metric_t *fam, msm_metric_child_t *c)
{
    if (fam->mf_type == MSM_METRIC_COUNTER) {
        buf_puts(b, fam->mf_name);
        buf_labels(b, c, NULL);
        buf_putc(b, ' ');
        buf_u64(b, atomic_load_explicit(&c->ch_value, memory_order_relaxed));
        buf_putc(b, '\n');
        return;
    }
    if (fam->mf_type == MSM_METRIC_GAUGE) {
        buf_puts(b, fam->mf_name);
        buf_labels(b, c, NULL);
        buf_putc(b, ' ');
        buf_double(b, bitsd(atomic_load_explicit(&c->ch_value, memory_order_relaxed)));
        buf_putc(b, '\n');
        return;
    }
    /* Histogram: each bucket is read once and accumulated, so the +Inf line and _count
     * agree even while other threads observe. */
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= fam->mf_nbuckets; i++) {
        cum += atomic_load_explicit(&c->ch_buckets[i], memory_order_relaxed);
        if (i < fam->mf_nbuckets)
            fmt_double(le, sizeof(le), fam->mf_buckets[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        buf_puts(b, fam->mf_name);
        buf_puts(b, "_bucket");
        buf_labels(b, c, le);
        buf_putc(b, ' ');
        buf_u64(b, cum);
        buf_putc(b, '\n');
    }
    buf_puts(b, fam->mf_name);
    buf_puts(b, "_sum");
    buf_labels(b, c, NULL);
    buf_putc(b, ' ');
    buf_double(b, bitsd(atomic_load_explicit(&c->ch_sum_bits, memory_order_relaxed)));
    buf_putc(b, '\n');
    buf_puts(b, fam->mf_name);
    buf_puts(b, "_count");
    buf_labels(b, c, NULL);
    buf_putc(b, ' ');
    buf_u64(b, cum);
    buf_putc(b, '\n');
}

static const char *type_name(msm_metric_type_t t)
{
    switch (t) {
    case MSM_METRIC_COUNTER:
        return "counter";
    case MSM_METRIC_GAUGE:
        return "gauge";
    case MSM_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static void run_collectors(msm_metrics_t *reg)
{
    /* Snapshot, so a collector may register families or remove itself without deadlock. */
    pthread_mutex_lock(&reg->mr_lock);
    size_t n = reg->mr_ncollectors;
    collector_t *copy = n ? malloc(n * sizeof(*copy)) : NULL;
    if (copy)
        memcpy(copy, reg->mr_collectors, n * sizeof(*copy));
    pthread_mutex_unlock(&reg->mr_lock);
    for (size_t i = 0; copy && i < n; i++)
        copy[i].co_cb(reg, copy[i].co_opaque);
    free(copy);
}

char *msm_metrics_render(msm_metrics_t *reg, size_t *len)
{
    buf_t b = {0};
    run_collectors(reg);
    buf_reserve(&b, 0);
    if (!b.b_oom)
        b.b_p[0] = '\0';
    pthread_mutex_lock(&reg->mr_lock);
    for (msm_metric_t *fam = reg->mr_head; fam; fam = fam->mf_next) {
        if (fam->mf_help[0]) {
            buf_puts(&b, "# HELP ");
            buf_puts(&b, fam->mf_name);
            buf_putc(&b, ' ');
            buf_escaped(&b, fam->mf_help, 0);
            buf_putc(&b, '\n');
        }
        buf_puts(&b, "# TYPE ");
        buf_puts(&b, fam->mf_name);
        buf_putc(&b, ' ');
        buf_puts(&b, type_name(fam->mf_type));
        buf_putc(&b, '\n');
        pthread_mutex_lock(&fam->mf_lock);
        for (msm_metric_child_t *c = fam->mf_head; c; c = c->ch_next)
            render_child(&b, fam, c);
        pthread_mutex_unlock(&fam->mf_lock);
    }
    pthread_mutex_unlock(&reg->mr_lock);
    if (b.b_oom) {
        free(b.b_p);
        return NULL;
    }
    if (len)
        *len = b.b_len;
    return b.b_p;
}
