# Included by each interface package of this repository after its find_package() calls.
# The PyPI message wheels export their Python generator targets with the include directory of the
# interpreter they were built with (/opt/python/cpXY-cpXY/include/pythonX.Y in the manylinux image),
# which CMake refuses as a non-existent path: point them at this interpreter's headers. A no-op with
# a ROS 2 installation from packages.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_target IN LISTS _imported)
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs AND _dirs MATCHES "/opt/python/")
    list(FILTER _dirs EXCLUDE REGEX "^/opt/python/")
    list(APPEND _dirs ${Python3_INCLUDE_DIRS})
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
  endif()
endforeach()
