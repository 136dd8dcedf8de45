/* SPDX-License-Identifier: MIT */
/* A producer built outside the tree by lambda.install from the installed <msm/client.h>:
 * it publishes to the frontend at argv[1], where nobody listens, and exits 0 only when the
 * client says so (MSM_ERR_IO with a message) instead of hanging or crashing. */
#include <msm/client.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        return 2;
    }
    msm_client_t *c = msm_client_new(argv[1]);
    if (c == NULL) {
        return 1;
    }
    msm_client_set_timeout_ms(c, 5000);
    msm_message_t m = {.data = "{\"hello\":\"world\"}"};
    msm_publish_result_t r;
    int rc = msm_client_publish(c, "hello", &m, 1, &r);
    const msm_client_error_t *e = msm_client_last_error(c);
    printf("publish: %s (%s)\n", msm_err_str(rc), e->message);
    int ok = rc == MSM_ERR_IO && e->message[0] != '\0';
    msm_client_free(c);
    return ok ? 0 : 1;
}
