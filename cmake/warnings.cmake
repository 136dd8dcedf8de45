# Warnings for msm's own code only (generated protobuf code gets none of these).
function(msm_warnings target)
    target_compile_options(${target} PRIVATE
        -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
        -Wno-format-nonliteral -Werror)
endfunction()
