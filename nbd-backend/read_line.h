// read_line: the first line of a small text file (sysfs, procfs), without
// its newline; empty if the file cannot be read.
#pragma once

#include <fstream>
#include <string>

namespace mirror {

inline std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace mirror
