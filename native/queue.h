// UblkQueue: one ublk hardware queue, owned by exactly one thread (the kernel binds a queue to the task that
// issued its first FETCH_REQ). Holds the descriptor mmap, the per-tag buffers and one io_uring that carries
// both the ublk I/O commands and the backing I/O, so a batch costs one io_uring_enter and one N-API call.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

#include "uring.h"

struct ublksrv_io_desc;

class UblkQueue : public Napi::ObjectWrap<UblkQueue> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit UblkQueue(const Napi::CallbackInfo& info);
  ~UblkQueue() override;

 private:
  enum TagState : uint8_t { kInKernel, kOwned, kAborted, kIdle };
  struct RingBroken { int err; };  // a hard io_uring_enter error: thrown by Sqe(), reported by run()/fetchAll()
  struct Slot {
    int tag;
    int op;
    int fd;
    int flags;
    uint32_t buf_off;
    uint32_t len;
    uint64_t off;
    int next_free;
  };

  Napi::Value FetchAll(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value WriteTag(const Napi::CallbackInfo& info);
  Napi::Value Copy(const Napi::CallbackInfo& info);

  io_uring_sqe* Sqe();
  void PrepIoCmd(int tag, bool commit, int result);
  void PrepSlot(int slot);
  void ArmWake();
  void OpDone(int tag, int res);
  void Commit(int tag, int result, bool io_error = false);
  bool Reap(int* nready);
  void PublishStatus();
  void Report(int tag, int* nready);
  bool ValidRecord(const int32_t* rec) const;
  void SetState(int tag, uint8_t s);
  void Release();
  uint8_t* Buf(int tag) { return bufs_ + static_cast<size_t>(tag) * buf_bytes_; }

  int cdev_fd_ = -1;
  int q_id_ = 0;
  int depth_ = 0;
  uint32_t buf_bytes_ = 0;
  bool encoded_ = true;
  Ring ring_;
  const ublksrv_io_desc* iods_ = nullptr;
  size_t iods_len_ = 0;
  uint8_t* bufs_ = nullptr;
  size_t bufs_len_ = 0;
  uint8_t* scratch_ = nullptr;  // copy()'s page-aligned bounce buffer (buf_bytes_), mapped on first use
  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;

  std::vector<uint8_t> state_;
  std::vector<int> pending_;       // backing ops in flight per tag
  std::vector<int> err_;           // first error per tag (0 = none)
  std::vector<int> commit_res_;    // result to commit once pending_ reaches 0
  std::vector<uint8_t> commit_wait_;
  std::vector<uint8_t> bad_;       // a bad plan record named the tag: its COMMIT fails it with -EIO
  std::vector<int> backlog_;       // requests that arrived while the ready buffer was full
  int bad_records_ = 0;
  int failed_ = 0;
  int broken_ = 0;                 // errno of a hard ring failure: the queue cannot go on
  bool fetched_ = false;
  std::vector<Slot> slots_;
  int free_slot_ = -1;
  int inflight_ = 0;
  int counts_[4] = {0, 0, 0, 0};  // by TagState
  int wakeups_ = 0;
  // A wake stays pending until run() returns it: one seen while fetching or mid-batch must not be lost.
  bool woke_ = false;
  int last_error_ = 0;

  Napi::Reference<Napi::Uint32Array> ready_ref_;
  Napi::Reference<Napi::Int32Array> plan_ref_;
  Napi::Reference<Napi::Int32Array> status_ref_;
  Napi::Reference<Napi::Uint32Array> completed_ref_;
  uint32_t* completed_ = nullptr;
  int ncompleted_ = 0;
  bool io_error_seen_ = false;  // a tag committed in this run() failed in its backing I/O
  uint32_t* ready_ = nullptr;
  size_t ready_cap_ = 0;
  int32_t* plan_ = nullptr;
  size_t plan_cap_ = 0;
  int32_t* status_ = nullptr;
};
