// Raw io_uring syscalls and ring mapping. See uring.h for the ownership and ordering rules.
#include "uring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

static int sys_io_uring_setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                              const void* arg, size_t argsz) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz));
}

int Ring::Setup(unsigned entries, unsigned flags, unsigned cq_entries) {
  io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = flags;
  if (cq_entries) {
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = cq_entries;
  }
  int fd = sys_io_uring_setup(entries, &p);
  if (fd < 0) return -errno;
  fd_ = fd;
  flags_ = p.flags;
  features_ = p.features;

  sq_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cq_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && cq_len_ > sq_len_) sq_len_ = cq_len_;
  sq_ptr_ = mmap(nullptr, sq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sq_ptr_ == MAP_FAILED) {
    sq_ptr_ = nullptr;
    int e = -errno;
    Close();
    return e;
  }
  if (single) {
    cq_ptr_ = sq_ptr_;
  } else {
    cq_ptr_ = mmap(nullptr, cq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq_ptr_ == MAP_FAILED) {
      cq_ptr_ = nullptr;
      int e = -errno;
      Close();
      return e;
    }
  }
  size_t sqe_size = (flags_ & IORING_SETUP_SQE128) ? 128 : 64;
  sqes_len_ = p.sq_entries * sqe_size;
  void* sqes = mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) {
    int e = -errno;
    Close();
    return e;
  }
  sqes_ = static_cast<io_uring_sqe*>(sqes);

  char* sq = static_cast<char*>(sq_ptr_);
  sq_khead_ = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
  sq_ktail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
  sq_mask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
  sq_entries_ = p.sq_entries;
  // Identity map: SQ slot i always names SQE i, so we never touch the array again.
  unsigned* array = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
  for (unsigned i = 0; i < sq_entries_; i++) array[i] = i;
  sqe_tail_ = *sq_ktail_;

  char* cq = static_cast<char*>(cq_ptr_);
  cq_khead_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
  cq_ktail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
  cq_mask_ = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<io_uring_cqe*>(cq + p.cq_off.cqes);
  return 0;
}

void Ring::Close() {
  if (sqes_) munmap(sqes_, sqes_len_);
  if (cq_ptr_ && cq_ptr_ != sq_ptr_) munmap(cq_ptr_, cq_len_);
  if (sq_ptr_) munmap(sq_ptr_, sq_len_);
  if (fd_ >= 0) close(fd_);
  sqes_ = nullptr;
  cq_ptr_ = sq_ptr_ = nullptr;
  fd_ = -1;
}

io_uring_sqe* Ring::GetSqe() {
  unsigned head = __atomic_load_n(sq_khead_, __ATOMIC_ACQUIRE);
  if (sqe_tail_ - head >= sq_entries_) return nullptr;
  size_t stride = (flags_ & IORING_SETUP_SQE128) ? 2 : 1;
  io_uring_sqe* sqe = sqes_ + (sqe_tail_ & sq_mask_) * stride;
  memset(sqe, 0, 64 * stride);
  sqe_tail_++;
  return sqe;
}

unsigned Ring::Pending() const {
  return sqe_tail_ - __atomic_load_n(sq_khead_, __ATOMIC_ACQUIRE);
}

int Ring::Submit(unsigned wait_nr, const struct __kernel_timespec* ts) {
  __atomic_store_n(sq_ktail_, sqe_tail_, __ATOMIC_RELEASE);
  unsigned to_submit = Pending();
  unsigned flags = wait_nr ? IORING_ENTER_GETEVENTS : 0;
  const void* arg = nullptr;
  size_t argsz = 0;
  io_uring_getevents_arg ext;
  if (ts) {
    memset(&ext, 0, sizeof ext);
    ext.ts = reinterpret_cast<uint64_t>(ts);
    flags |= IORING_ENTER_EXT_ARG;
    arg = &ext;
    argsz = sizeof ext;
  }
  if (to_submit == 0 && wait_nr == 0) return 0;
  int ret = sys_io_uring_enter(fd_, to_submit, wait_nr, flags, arg, argsz);
  return ret < 0 ? -errno : ret;
}

io_uring_cqe* Ring::PeekCqe() {
  unsigned head = *cq_khead_;
  unsigned tail = __atomic_load_n(cq_ktail_, __ATOMIC_ACQUIRE);
  if (head == tail) return nullptr;
  return &cqes_[head & cq_mask_];
}

void Ring::Seen() {
  __atomic_store_n(cq_khead_, *cq_khead_ + 1, __ATOMIC_RELEASE);
}
