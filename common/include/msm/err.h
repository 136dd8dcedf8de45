/* SPDX-License-Identifier: MIT */
/* One status type for all of msm: 0 is success, negative values are errors. */
#ifndef MSM_ERR_H
#define MSM_ERR_H

typedef enum {
    MSM_OK = 0,
    MSM_ERR_NOMEM = -1,     /**< allocation failed */
    MSM_ERR_INVALID = -2,   /**< bad argument or input */
    MSM_ERR_NOTFOUND = -3,  /**< no such topic, key, stream, ... */
    MSM_ERR_EXISTS = -4,    /**< already there */
    MSM_ERR_IO = -5,        /**< a system call failed */
    MSM_ERR_TIMEOUT = -6,   /**< no answer in time */
    MSM_ERR_BACKEND = -7,   /**< a backend (Redis, Kafka) is unavailable or refused */
    MSM_ERR_TOOLARGE = -8,  /**< over a configured limit */
    MSM_ERR_CONFLICT = -9,  /**< incompatible with current state */
    MSM_ERR_SHUTDOWN = -10, /**< the component is shutting down */
    MSM_ERR_PARSE = -11,    /**< malformed input */
    MSM_ERR_DENIED = -12,   /**< refused by policy (e.g. a network address not allowed) */
} msm_err_t;

/** @brief A short, static, human-readable name for @p err. */
const char *msm_err_str(int err);

#endif
