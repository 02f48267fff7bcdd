// A minimal io_uring over raw syscalls (no liburing): setup, SQE allocation, submit/wait, CQE reaping.
// One Ring belongs to one thread; nothing here is thread-safe. Memory ordering follows the kernel's
// io_uring contract: we publish sq tail / cq head with release stores and read kernel indices with acquire.
#pragma once
#include <linux/io_uring.h>
#include <cstdint>
#include <ctime>

class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() { Close(); }

  // Returns 0 or -errno. cq_entries 0 lets the kernel pick (2 * entries).
  int Setup(unsigned entries, unsigned flags, unsigned cq_entries = 0);
  void Close();
  bool Valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // A zeroed SQE, or nullptr when the submission queue is full (submit, then try again).
  io_uring_sqe* GetSqe();
  // Number of SQEs prepared but not yet consumed by the kernel.
  unsigned Pending() const;
  // Publishes prepared SQEs and enters the kernel; waits for wait_nr completions (optionally until *ts).
  // Returns the number submitted, or -errno (-ETIME on timeout, -EINTR on signal).
  int Submit(unsigned wait_nr = 0, const struct __kernel_timespec* ts = nullptr);

  // Next completion, or nullptr. Call Seen() after handling it.
  io_uring_cqe* PeekCqe();
  void Seen();

 private:
  int fd_ = -1;
  unsigned flags_ = 0;
  unsigned features_ = 0;
  void* sq_ptr_ = nullptr;
  size_t sq_len_ = 0;
  void* cq_ptr_ = nullptr;
  size_t cq_len_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqes_len_ = 0;
  unsigned* sq_khead_ = nullptr;
  unsigned* sq_ktail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned sqe_tail_ = 0;  // our private tail; published to *sq_ktail_ by Submit
  unsigned* cq_khead_ = nullptr;
  unsigned* cq_ktail_ = nullptr;
  unsigned cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
};
