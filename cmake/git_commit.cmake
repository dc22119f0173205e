# Writes OUT (a C++ file defining sparsetune::detail::kGitCommit) with the source tree's short
# commit, "-dirty" when tracked files have changes, or FALLBACK without git. Run at every build
# (core/CMakeLists.txt), so a binary never reports the commit of an older configure; the file is
# rewritten only when the string changes, so an unchanged tree relinks nothing.
# SPARSETUNE_GIT_COMMIT in the build's environment wins: for a copied tree whose .git is missing or
# stale (a release tarball, a working tree synced to a GPU host without its history).
set(commit "${FALLBACK}")
if(DEFINED ENV{SPARSETUNE_GIT_COMMIT} AND NOT "$ENV{SPARSETUNE_GIT_COMMIT}" STREQUAL "")
  set(commit "$ENV{SPARSETUNE_GIT_COMMIT}")
elseif(GIT_EXECUTABLE)
  execute_process(COMMAND "${GIT_EXECUTABLE}" rev-parse --short=12 HEAD
                  WORKING_DIRECTORY "${SRC}" OUTPUT_VARIABLE head
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND head)
    set(commit "${head}")
    execute_process(COMMAND "${GIT_EXECUTABLE}" status --porcelain --untracked-files=no
                    WORKING_DIRECTORY "${SRC}" OUTPUT_VARIABLE dirty
                    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(dirty)
      set(commit "${commit}-dirty")
    endif()
  endif()
endif()
set(text "// Generated at build time by cmake/git_commit.cmake; do not edit.
namespace sparsetune::detail {
extern const char* const kGitCommit;
const char* const kGitCommit = \"${commit}\";
}  // namespace sparsetune::detail
")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
