/* SPDX-License-Identifier: MIT */
/* Build identity, stamped by CMake (MSM_VERSION, MSM_GIT_SHA). */
#include "msm/version.h"

const char *msm_version(void)
{
    return MSM_VERSION;
}

const char *msm_git_sha(void)
{
    return MSM_GIT_SHA;
}
