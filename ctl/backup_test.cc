// copy_image's bounds: a secondary that never answers fails the copy with
// ETIMEDOUT after the I/O timeout, and a cancel (a signal, in mirrorctl)
// stops it at once, however long that timeout. The server here is a Unix
// socket nobody accepts on: the connection completes in the backlog and the
// NBD handshake never comes, as with a hung mirrord.
#include "backup.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_listener.h"

namespace mirror {
namespace {

class Image {
 public:
  Image() {
    char tmpl[] = "/tmp/mirrorctl-image-XXXXXX";
    fd_.reset(::mkstemp(tmpl));
    path_ = tmpl;
  }
  ~Image() { ::unlink(path_.c_str()); }
  int fd() const { return fd_.get(); }

 private:
  std::string path_;
  UniqueFd fd_;
};

TEST(CopyImage, GivesUpOnASecondaryThatNeverAnswers) {
  Listener hung;
  Image img;
  CopyOptions o;
  o.uri = "nbd+unix:///db?socket=" + hung.path();
  o.fd = img.fd();
  o.io_timeout_ms = 200;
  auto r = copy_image(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(ETIMEDOUT, r.error().code) << r.error().to_string();
  EXPECT_NE(std::string::npos, r.error().message.find(o.uri + " did not answer"))
      << r.error().message;
}

TEST(CopyImage, ACancelStopsTheWaitAtOnce) {
  Listener hung;
  Image img;
  int p[2];
  ASSERT_EQ(0, ::pipe(p));
  UniqueFd rd(p[0]), wr(p[1]);
  ASSERT_EQ(1, ::write(wr.get(), "x", 1));  // the signal came
  CopyOptions o;
  o.uri = "nbd+unix:///db?socket=" + hung.path();
  o.fd = img.fd();
  o.io_timeout_ms = 3600 * 1000;  // the cancel, not the timeout, must end it
  o.cancel_fd = rd.get();
  auto r = copy_image(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(ECANCELED, r.error().code) << r.error().to_string();
}

}  // namespace
}  // namespace mirror
