# Finds xsimd. Debian's xsimd 8.1 package exports a target whose
# INTERFACE_LINK_LIBRARIES names `xtl` without finding it (xtl is only needed
# for xsimd's optional xtl::xcomplex support, which lqer does not use): use the
# xtl target when xtl-dev is installed, otherwise drop the dangling name so that
# linking does not look for a non-existent libxtl.
find_package(xtl QUIET)
find_package(xsimd REQUIRED)
if(NOT TARGET xtl AND TARGET xsimd)
  get_target_property(_lqer_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_lqer_xsimd_libs)
    list(REMOVE_ITEM _lqer_xsimd_libs xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_lqer_xsimd_libs}")
  endif()
endif()
