// A listening Unix socket in a fresh directory, for tests of clients that
// must not wait for ever: nobody accepts unless the test does, so a
// connection completes in the backlog and then nothing answers, as with a
// hung daemon.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "unique_fd.h"

namespace mirror {

class Listener {
 public:
  explicit Listener(int backlog = 16) {
    char tmpl[] = "/tmp/mirrorctl-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/ctl";
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path_.data(), path_.size());
    EXPECT_EQ(0, ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&un), sizeof un));
    EXPECT_EQ(0, ::listen(fd_.get(), backlog));
  }
  ~Listener() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }

 private:
  std::string dir_, path_;
  UniqueFd fd_;
};

}  // namespace mirror
