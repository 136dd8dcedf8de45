# msm_add_daemon(<layer>): the static library msm_<layer> from <layer>/src/*.c except main.c
# (the logic, tested in-process) and the executable msm-<layer> from main.c alone.
function(msm_add_daemon layer)
    set(dir ${CMAKE_CURRENT_SOURCE_DIR}/src)
    file(GLOB srcs CONFIGURE_DEPENDS ${dir}/*.c)
    list(REMOVE_ITEM srcs ${dir}/main.c)
    add_library(msm_${layer} STATIC ${srcs})
    target_include_directories(msm_${layer} PUBLIC ${dir})
    target_link_libraries(msm_${layer} PUBLIC msm_common)
    msm_warnings(msm_${layer})

    add_executable(msm-${layer} ${dir}/main.c)
    target_link_libraries(msm-${layer} PRIVATE msm_${layer})
    msm_warnings(msm-${layer})
    install(TARGETS msm-${layer} RUNTIME DESTINATION bin)
endfunction()
