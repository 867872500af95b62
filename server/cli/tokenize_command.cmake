# `mambaserve tokenize` subcommand library; included from server/cli/CMakeLists.txt (and from the
# tokenizer tests when the tools directory has not defined it yet).
include_guard(GLOBAL)
add_library(mambaserve_tokenize_command ${CMAKE_CURRENT_LIST_DIR}/tokenize_command.cc)
target_include_directories(mambaserve_tokenize_command PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(mambaserve_tokenize_command
  PUBLIC mambaserve_tokenizer
  PRIVATE mambaserve_command_line mambaserve_model absl::status absl::statusor absl::strings nlohmann_json::nlohmann_json)
