# The ROS 2 PyPI wheels export include directories of the machine they were
# built on (/opt/python/...). CMake's generate step fails on such a missing
# path once an interface depends on another interface package, so drop those
# entries from every imported target after all find_package calls. A no-op on
# a regular ROS 2 install, where no such paths exist.
function(privacy_vision_drop_wheel_build_paths)
  get_property(targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(dirs)
      list(FILTER dirs EXCLUDE REGEX "^/opt/python/")
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${dirs}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL privacy_vision_drop_wheel_build_paths)
