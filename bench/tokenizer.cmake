# Tokenizer encode throughput; run `tokenizer_bench` to refresh bench/results/tokenizer.json.
add_executable(tokenizer_bench ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bench.cc)
target_link_libraries(tokenizer_bench PRIVATE mambaserve_tokenizer nlohmann_json::nlohmann_json)
target_compile_definitions(tokenizer_bench PRIVATE MAMBASERVE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
