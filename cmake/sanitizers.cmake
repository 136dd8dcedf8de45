# MSM_SANITIZE="address;undefined" builds everything with those sanitizers.
set(MSM_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address;undefined")
if(MSM_SANITIZE)
    string(REPLACE ";" "," _msm_san "${MSM_SANITIZE}")
    add_compile_options(-fsanitize=${_msm_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_link_options(-fsanitize=${_msm_san})
    message(STATUS "msm: sanitizers ${_msm_san}")
endif()
