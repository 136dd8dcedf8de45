/* SPDX-License-Identifier: MIT */
/* Build identity reported by --version and /debug/info. */
#ifndef MSM_VERSION_H
#define MSM_VERSION_H

/** @brief The release version, e.g. "0.1.0" (static string). */
const char *msm_version(void);

/** @brief The short git sha the build came from, or "unknown" (static string). */
const char *msm_git_sha(void);

#endif
