/* SPDX-License-Identifier: MIT */
/* Names for msm_err_t values. */
#include "msm/err.h"

const char *msm_err_str(int err)
{
    switch ((msm_err_t)err) {
    case MSM_OK:
        return "ok";
    case MSM_ERR_NOMEM:
        return "out of memory";
    case MSM_ERR_INVALID:
        return "invalid argument";
    case MSM_ERR_NOTFOUND:
        return "not found";
    case MSM_ERR_EXISTS:
        return "already exists";
    case MSM_ERR_IO:
        return "i/o error";
    case MSM_ERR_TIMEOUT:
        return "timed out";
    case MSM_ERR_BACKEND:
        return "backend unavailable";
    case MSM_ERR_TOOLARGE:
        return "too large";
    case MSM_ERR_CONFLICT:
        return "conflict";
    case MSM_ERR_SHUTDOWN:
        return "shutting down";
    case MSM_ERR_PARSE:
        return "malformed input";
    case MSM_ERR_DENIED:
        return "denied by policy";
    }
    return "unknown error";
}
