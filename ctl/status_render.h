// Renders the status JSON (schema 1) as a table for people.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mirror {

std::string human_bytes(uint64_t n);
// `bar`: draw a progress bar for a running resync (a terminal).
std::string render_status(const nlohmann::json& status, bool bar);

}  // namespace mirror
