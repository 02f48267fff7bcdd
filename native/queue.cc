// UblkQueue implementation. Thread ownership: every method must run on the thread that constructed the
// queue (a piscina worker); the kernel rejects FETCH/COMMIT from any other task. Per-request work here is
// bookkeeping and SQE preparation only; the decisions arrive precomputed in the plan buffer.
#include "queue.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "errors.h"
#include "queue_abi.h"
#include "ublk_abi.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace {
constexpr uint64_t kTypeCmd = 0, kTypeOp = 1ULL << 62, kTypeWake = 2ULL << 62, kTypeMask = 3ULL << 62;
constexpr int kSlotsPerTag = 16;

unsigned RoundPow2(unsigned v) {
  unsigned p = 1;
  while (p < v) p <<= 1;
  return p;
}

// pwrite(2) of all `len` bytes (EINTR retried, a short write continued); a VdiskError (syscall 'pwrite') otherwise.
void WriteFully(Napi::Env env, int fd, const uint8_t* buf, size_t len, int64_t off) {
  for (size_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, buf + done, len - done, static_cast<off_t>(off + static_cast<int64_t>(done)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSysError(env, errno, "pwrite");
    if (n == 0) ThrowSysError(env, EIO, "pwrite", "short write");
    done += static_cast<size_t>(n);
  }
}

// pread(2) of all `len` bytes, the same way; end of file is an error (syscall 'pread').
void ReadFully(Napi::Env env, int fd, uint8_t* buf, size_t len, int64_t off) {
  for (size_t done = 0; done < len;) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(off + static_cast<int64_t>(done)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSysError(env, errno, "pread");
    if (n == 0) ThrowSysError(env, EIO, "pread", "past the end");
    done += static_cast<size_t>(n);
  }
}

uint32_t Prop(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("UblkQueue: ") + key + " must be a number");
  return v.As<Napi::Number>().Uint32Value();
}
}  // namespace

Napi::Function UblkQueue::Init(Napi::Env env) {
  return DefineClass(env, "UblkQueue",
                     {InstanceMethod<&UblkQueue::FetchAll>("fetchAll"), InstanceMethod<&UblkQueue::Run>("run"),
                      InstanceMethod<&UblkQueue::Close>("close"), InstanceMethod<&UblkQueue::WriteTag>("writeTag"),
                      InstanceMethod<&UblkQueue::Copy>("copy")});
}

UblkQueue::UblkQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UblkQueue>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "UblkQueue(options) needs an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  cdev_fd_ = static_cast<int>(Prop(o, "cdevFd"));
  q_id_ = static_cast<int>(Prop(o, "qId"));
  depth_ = static_cast<int>(Prop(o, "depth"));
  buf_bytes_ = Prop(o, "maxIoBufBytes");
  encoded_ = o.Get("encoded").ToBoolean();
  long page = sysconf(_SC_PAGESIZE);
  if (depth_ < 1 || depth_ > UBLK_MAX_QUEUE_DEPTH) throw Napi::RangeError::New(env, "UblkQueue: bad depth");
  if (buf_bytes_ == 0 || buf_bytes_ % page) throw Napi::RangeError::New(env, "UblkQueue: maxIoBufBytes must be page-aligned");

  Napi::Value ready = o.Get("ready"), plan = o.Get("plan"), status = o.Get("status"), completed = o.Get("completed");
  if (!completed.IsTypedArray() || completed.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      completed.As<Napi::Uint32Array>().ElementLength() < static_cast<size_t>(depth_))
    throw Napi::TypeError::New(env, "UblkQueue: completed must be a Uint32Array of depth entries");
  completed_ref_ = Napi::Reference<Napi::Uint32Array>::New(completed.As<Napi::Uint32Array>(), 1);
  completed_ = completed.As<Napi::Uint32Array>().Data();
  if (!ready.IsTypedArray() || ready.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      !plan.IsTypedArray() || plan.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      !status.IsTypedArray() || status.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(env, "UblkQueue: ready must be a Uint32Array, plan and status Int32Arrays");
  Napi::Uint32Array r = ready.As<Napi::Uint32Array>();
  Napi::Int32Array p = plan.As<Napi::Int32Array>(), s = status.As<Napi::Int32Array>();
  if (r.ElementLength() < static_cast<size_t>(depth_) * kReadyStride || s.ElementLength() < kStatusLen ||
      p.ElementLength() < kPlanStride)
    throw Napi::RangeError::New(env, "UblkQueue: ready/plan/status buffers too small");
  ready_ref_ = Napi::Reference<Napi::Uint32Array>::New(r, 1);
  plan_ref_ = Napi::Reference<Napi::Int32Array>::New(p, 1);
  status_ref_ = Napi::Reference<Napi::Int32Array>::New(s, 1);
  ready_ = r.Data();
  ready_cap_ = r.ElementLength() / kReadyStride;
  plan_ = p.Data();
  plan_cap_ = p.ElementLength() / kPlanStride;
  status_ = s.Data();

  // The ublksrv_io_desc area is mapped by FetchAll, after the FETCHes: see there.
  iods_len_ = (static_cast<size_t>(depth_) * sizeof(ublksrv_io_desc) + page - 1) / page * page;

  bufs_len_ = static_cast<size_t>(depth_) * buf_bytes_;
  void* bufs = mmap(nullptr, bufs_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bufs == MAP_FAILED) {
    int e = errno;
    Release();
    ThrowSysError(env, e, "mmap", "tag buffers");
  }
  bufs_ = static_cast<uint8_t*>(bufs);

  int nslots = depth_ * kSlotsPerTag;
  int r2 = ring_.Setup(RoundPow2(depth_ * 2), 0, RoundPow2(depth_ + nslots + 8));
  if (r2 < 0) {
    Release();
    ThrowSysError(env, -r2, "io_uring_setup");
  }
  // Borrowed, not owned: the main thread creates and closes it, so a late wake can never hit a reused fd.
  wake_fd_ = static_cast<int>(Prop(o, "wakeFd"));
  state_.assign(depth_, kIdle);
  counts_[kIdle] = depth_;
  pending_.assign(depth_, 0);
  err_.assign(depth_, 0);
  commit_res_.assign(depth_, 0);
  commit_wait_.assign(depth_, 0);
  bad_.assign(depth_, 0);
  slots_.resize(nslots);
  for (int i = 0; i < nslots; i++) slots_[i].next_free = i + 1 < nslots ? i + 1 : -1;
  free_slot_ = 0;
  PublishStatus();
}

UblkQueue::~UblkQueue() { Release(); }

void UblkQueue::Release() {
  ring_.Close();  // cancels our outstanding uring_cmds; the kernel then quiesces or kills the device
  if (iods_) munmap(const_cast<ublksrv_io_desc*>(iods_), iods_len_);
  if (bufs_) munmap(bufs_, bufs_len_);
  if (scratch_) munmap(scratch_, buf_bytes_);
  iods_ = nullptr;
  bufs_ = nullptr;
  scratch_ = nullptr;
  wake_fd_ = -1;
}

// The submission queue is full: submit to make room. A hard io_uring_enter error leaves the SQEs where they
// are, so retrying would spin forever: the ring is broken, and run()/fetchAll() report it (RingBroken).
io_uring_sqe* UblkQueue::Sqe() {
  io_uring_sqe* sqe = ring_.GetSqe();
  while (!sqe) {
    int r = ring_.Submit(0);
    if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
      last_error_ = r;
      broken_ = -r;
      throw RingBroken{-r};
    }
    sqe = ring_.GetSqe();
  }
  return sqe;
}

void UblkQueue::SetState(int tag, uint8_t s) {
  counts_[state_[tag]]--;
  state_[tag] = s;
  counts_[s]++;
}

void UblkQueue::PrepIoCmd(int tag, bool commit, int result) {
  io_uring_sqe* sqe = Sqe();
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = cdev_fd_;
  if (encoded_)
    sqe->cmd_op = commit ? UBLK_U_IO_COMMIT_AND_FETCH_REQ : UBLK_U_IO_FETCH_REQ;
  else
    sqe->cmd_op = commit ? UBLK_IO_COMMIT_AND_FETCH_REQ : UBLK_IO_FETCH_REQ;
  sqe->user_data = kTypeCmd | static_cast<uint64_t>(tag);
  ublksrv_io_cmd cmd;
  cmd.q_id = static_cast<uint16_t>(q_id_);
  cmd.tag = static_cast<uint16_t>(tag);
  cmd.result = result;
  cmd.addr = reinterpret_cast<uint64_t>(Buf(tag));
  memcpy(sqe->cmd, &cmd, sizeof cmd);
  SetState(tag, kInKernel);
}

void UblkQueue::PrepSlot(int i) {
  Slot& s = slots_[i];
  io_uring_sqe* sqe = Sqe();
  sqe->fd = s.fd;
  sqe->user_data = kTypeOp | static_cast<uint64_t>(i);
  switch (s.op) {
    case kOpRead:
    case kOpWrite:
      sqe->opcode = s.op == kOpRead ? IORING_OP_READ : IORING_OP_WRITE;
      sqe->addr = reinterpret_cast<uint64_t>(Buf(s.tag) + s.buf_off);
      sqe->len = s.len;
      sqe->off = s.off;
      sqe->rw_flags = s.op == kOpWrite ? s.flags : 0;
      break;
    case kOpFdatasync:
      sqe->opcode = IORING_OP_FSYNC;
      sqe->fsync_flags = IORING_FSYNC_DATASYNC;
      break;
    case kOpFallocate:
      sqe->opcode = IORING_OP_FALLOCATE;
      sqe->off = s.off;
      sqe->addr = s.len;
      sqe->len = static_cast<uint32_t>(s.flags);
      break;
  }
}

void UblkQueue::ArmWake() {
  io_uring_sqe* sqe = Sqe();
  sqe->opcode = IORING_OP_READ;
  sqe->fd = wake_fd_;
  sqe->addr = reinterpret_cast<uint64_t>(&wake_buf_);
  sqe->len = sizeof wake_buf_;
  sqe->user_data = kTypeWake;
}

void UblkQueue::OpDone(int tag, int res) {
  if (res < 0 && err_[tag] == 0) err_[tag] = res;
  if (--pending_[tag] == 0 && commit_wait_[tag]) {
    commit_wait_[tag] = 0;
    int result = err_[tag] ? err_[tag] : commit_res_[tag];
    bool io_error = err_[tag] != 0;
    err_[tag] = 0;
    Commit(tag, result, io_error);
  }
}

void UblkQueue::Commit(int tag, int result, bool io_error) {
  PrepIoCmd(tag, true, result);
  if (result < 0) failed_++;
  // at most once per tag per run(): a tag needs a new plan
  completed_[ncompleted_++] = static_cast<uint32_t>(tag) | (io_error ? kCompletedIoError : 0u);
  // The worker reports I/O errors to the agent at once, not whenever the next request happens to arrive.
  if (io_error) io_error_seen_ = true;
}

// Handles every available completion; returns true if any were seen.
bool UblkQueue::Reap(int* nready) {
  bool any = false;
  while (io_uring_cqe* cqe = ring_.PeekCqe()) {
    any = true;
    uint64_t ud = cqe->user_data;
    int res = cqe->res;
    ring_.Seen();
    uint64_t type = ud & kTypeMask;
    if (type == kTypeCmd) {
      int tag = static_cast<int>(ud & 0xffff);
      if (res == UBLK_IO_RES_OK) {
        SetState(tag, kOwned);
        // A request is never dropped: one that does not fit the ready buffer is reported by a later run().
        if (*nready < static_cast<int>(ready_cap_)) Report(tag, nready);
        else backlog_.push_back(tag);
      } else {
        // ABORT (-ENODEV) when the device stops; anything else means the kernel refused the command.
        if (res != UBLK_IO_RES_ABORT) last_error_ = res;
        SetState(tag, kAborted);
      }
    } else if (type == kTypeOp) {
      int i = static_cast<int>(ud & 0xffffffff);
      Slot& s = slots_[i];
      if (res == -EAGAIN || res == -EINTR) {
        PrepSlot(i);
        continue;
      }
      if ((s.op == kOpRead || s.op == kOpWrite) && res >= 0 && static_cast<uint32_t>(res) < s.len) {
        if (res == 0 && s.op == kOpRead) {
          memset(Buf(s.tag) + s.buf_off, 0, s.len);  // past the container's end: a hole
        } else if (res == 0) {
          res = -EIO;
        } else {
          s.buf_off += res;
          s.len -= res;
          s.off += res;
          PrepSlot(i);
          continue;
        }
      }
      int tag = s.tag;
      s.next_free = free_slot_;
      free_slot_ = i;
      inflight_--;
      OpDone(tag, res < 0 ? res : 0);
    } else {
      wakeups_++;
      woke_ = true;
      if (res != -ECANCELED && wake_fd_ >= 0) ArmWake();
    }
  }
  return any;
}

void UblkQueue::Report(int tag, int* nready) {
  const ublksrv_io_desc& iod = iods_[tag];
  uint32_t* rec = ready_ + static_cast<size_t>(*nready) * kReadyStride;
  rec[kReadyTag] = tag;
  rec[kReadyOpFlags] = iod.op_flags;
  rec[kReadyNrSectors] = iod.nr_sectors;
  rec[kReadySectorLo] = static_cast<uint32_t>(iod.start_sector);
  rec[kReadySectorHi] = static_cast<uint32_t>(iod.start_sector >> 32);
  (*nready)++;
}

void UblkQueue::PublishStatus() {
  status_[kStatusInKernel] = counts_[kInKernel];
  status_[kStatusOwned] = counts_[kOwned];
  status_[kStatusInflight] = inflight_;
  status_[kStatusAborted] = counts_[kAborted];
  status_[kStatusWakeups] = wakeups_;
  status_[kStatusLastError] = last_error_;
  status_[kStatusCompleted] = ncompleted_;
  status_[kStatusBadRecords] = bad_records_;
  status_[kStatusFailed] = failed_;
}

Napi::Value UblkQueue::FetchAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ring_.Valid()) ThrowSysError(env, EBADF, "UblkQueue.fetchAll", "closed");
  if (fetched_) ThrowSysError(env, EALREADY, "UblkQueue.fetchAll", "queue " + std::to_string(q_id_) + " has fetched its tags already");
  fetched_ = true;
  // Queue threads write back pages of their own device's backing store: keep reclaim from recursing into us.
  prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  int nready = 0;
  try {
    for (int tag = 0; tag < depth_; tag++) PrepIoCmd(tag, false, 0);
    ArmWake();
    int r = ring_.Submit(0);
    if (r < 0) ThrowSysError(env, -r, "io_uring_enter", "UBLK_U_IO_FETCH_REQ");
    // Mapped only now: the kernel binds the area to the first process that maps it (ub->mm) until the next
    // START_USER_RECOVERY, and 6.12 refuses that START while no queue has fetched since the last one
    // (nr_queues_ready == 0). A server killed after a START and before its FETCHes has mapped nothing, so
    // the next one can take the device over without a START (UblkDevice.recover). No request arrives before
    // START_DEV or END_USER_RECOVERY, so nothing reads the area before it is there.
    void* iods = mmap(nullptr, iods_len_, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd_,
                      static_cast<off_t>(ublk_queue_cmd_buf_offset(q_id_, sysconf(_SC_PAGESIZE))));
    if (iods == MAP_FAILED) ThrowSysError(env, errno, "mmap", "ublksrv_io_desc area");
    iods_ = static_cast<const ublksrv_io_desc*>(iods);
    // FETCH_REQ completes only with a request or an error: anything here already is an error.
    Reap(&nready);
  } catch (const RingBroken& e) {
    PublishStatus();
    ThrowSysError(env, e.err, "io_uring_enter", "queue " + std::to_string(q_id_) + ": the ring failed");
  }
  PublishStatus();
  if (last_error_ < 0) ThrowSysError(env, -last_error_, "UBLK_U_IO_FETCH_REQ", "queue " + std::to_string(q_id_));
  return env.Undefined();
}

// Checks one plan record against the queue's state; a bad one fails its request (if it names a tag we own),
// never the batch: the queue, the device and the process keep serving.
bool UblkQueue::ValidRecord(const int32_t* rec) const {
  int op = rec[kPlanOp], tag = rec[kPlanTag];
  if (tag < 0 || tag >= depth_ || state_[tag] != kOwned || commit_wait_[tag]) return false;
  if (op == kOpCommit) return true;
  if (op < kOpRead || op > kOpZero) return false;
  uint32_t buf_off = static_cast<uint32_t>(rec[kPlanBufOff]), len = static_cast<uint32_t>(rec[kPlanLen]);
  if ((op == kOpRead || op == kOpWrite || op == kOpZero) && (buf_off > buf_bytes_ || len > buf_bytes_ - buf_off)) return false;
  return true;
}

// run(nOps, wait, timeoutMs, returnOnCommit): executes plan records [0, nOps), then returns how many new
// requests were written to the ready buffer. With wait it blocks until a request arrives, the wake eventfd
// fires, the timeout (ms, < 0 = none) passes, nothing more can ever complete (every tag aborted and idle),
// or, with returnOnCommit, a tag has been committed (a worker draining for a blocking command needs that).
// A bad record fails its request with -EIO (its other records are skipped) and is counted in
// kStatusBadRecords; a record naming a tag we do not own is skipped and counted.
Napi::Value UblkQueue::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ring_.Valid()) ThrowSysError(env, EBADF, "UblkQueue.run", "closed");
  if (broken_) ThrowSysError(env, broken_, "io_uring_enter", "queue " + std::to_string(q_id_) + ": the ring failed");
  uint32_t n_ops = info[0].As<Napi::Number>().Uint32Value();
  bool wait = info[1].ToBoolean();
  double timeout_ms = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : -1;
  bool return_on_commit = info.Length() > 3 && info[3].ToBoolean();
  if (n_ops > plan_cap_) throw Napi::RangeError::New(env, "UblkQueue.run: more operations than the plan holds");

  int nready = 0;
  ncompleted_ = 0;
  io_error_seen_ = false;
  try {
    // Requests that did not fit the ready buffer last time come first.
    size_t b = 0;
    for (; b < backlog_.size() && nready < static_cast<int>(ready_cap_); b++) Report(backlog_[b], &nready);
    backlog_.erase(backlog_.begin(), backlog_.begin() + static_cast<long>(b));
    for (uint32_t k = 0; k < n_ops; k++) {
      const int32_t* rec = plan_ + static_cast<size_t>(k) * kPlanStride;
      int op = rec[kPlanOp], tag = rec[kPlanTag];
      if (!ValidRecord(rec)) {
        bad_records_++;
        // A tag of ours gets -EIO at its COMMIT (still to come in the plan: the translator always ends a
        // request with one); a record for a tag we do not own names no request to fail.
        if (tag >= 0 && tag < depth_ && state_[tag] == kOwned && !commit_wait_[tag]) {
          if (op == kOpCommit) Commit(tag, -EIO);  // a COMMIT we cannot honour: fail now
          else bad_[tag] = 1;
        }
        continue;
      }
      if (op == kOpCommit) {
        int planned = bad_[tag] ? -EIO : rec[kPlanFd];
        bad_[tag] = 0;
        if (pending_[tag] == 0) {
          int result = err_[tag] ? err_[tag] : planned;
          bool io_error = err_[tag] != 0;
          err_[tag] = 0;
          Commit(tag, result, io_error);
        } else {
          commit_wait_[tag] = 1;
          commit_res_[tag] = planned;
        }
        continue;
      }
      if (bad_[tag]) continue;  // the request fails anyway: do not start more of it
      uint32_t buf_off = static_cast<uint32_t>(rec[kPlanBufOff]), len = static_cast<uint32_t>(rec[kPlanLen]);
      if (op == kOpZero) {
        memset(Buf(tag) + buf_off, 0, len);
        continue;
      }
      while (free_slot_ < 0) {  // more backing ops than slots: let some finish first
        int r = ring_.Submit(1);
        if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN) ThrowSysError(env, -r, "io_uring_enter");
        Reap(&nready);
      }
      int i = free_slot_;
      Slot& s = slots_[i];
      free_slot_ = s.next_free;
      s.tag = tag;
      s.op = op;
      s.fd = rec[kPlanFd];
      s.flags = rec[kPlanFlags];
      s.buf_off = buf_off;
      s.len = len;
      s.off = static_cast<uint64_t>(static_cast<uint32_t>(rec[kPlanOffLo])) |
              (static_cast<uint64_t>(static_cast<uint32_t>(rec[kPlanOffHi])) << 32);
      pending_[tag]++;
      inflight_++;
      PrepSlot(i);
    }

    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double deadline = now.tv_sec * 1e3 + now.tv_nsec / 1e6 + timeout_ms;
    Reap(&nready);
    while (wait && nready == 0 && !woke_ && !(return_on_commit && ncompleted_ > 0) && !io_error_seen_ && (counts_[kInKernel] > 0 || inflight_ > 0 || counts_[kOwned] > 0)) {
      struct __kernel_timespec ts, *tsp = nullptr;
      if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = deadline - (now.tv_sec * 1e3 + now.tv_nsec / 1e6);
        if (left <= 0) break;
        ts.tv_sec = static_cast<long long>(left / 1e3);
        ts.tv_nsec = static_cast<long long>((left - ts.tv_sec * 1e3) * 1e6);
        tsp = &ts;
      }
      int r = ring_.Submit(1, tsp);
      if (r < 0 && r != -EINTR && r != -ETIME && r != -EBUSY && r != -EAGAIN)
        ThrowSysError(env, -r, "io_uring_enter");
      Reap(&nready);
    }
    woke_ = false;  // reported by this return: the caller checks its mailboxes next
    // Push out the commits and fetches this batch produced before JS spends time on the new requests.
    if (ring_.Pending() > 0) ring_.Submit(0);
  } catch (const RingBroken& e) {
    PublishStatus();
    ThrowSysError(env, e.err, "io_uring_enter", "queue " + std::to_string(q_id_) + ": the ring failed");
  }
  PublishStatus();
  return Napi::Number::New(env, nready);
}

// writeTag(tag, fd, length, offset): a synchronous pwrite(2) of the first `length` bytes of a tag's buffer (a
// WRITE request's data, page-aligned, so O_DIRECT descriptors take it). Only for a copy-on-write claim, which
// must have its data in place before its entry is installed (io/claim-ring.ts): once per new segment, never
// per request. Returns the bytes written; throws a VdiskError (syscall 'pwrite').
Napi::Value UblkQueue::WriteTag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "writeTag(tag, fd, length, offset) needs four numbers");
  int64_t tag = info[0].As<Napi::Number>().Int64Value();
  int fd = info[1].As<Napi::Number>().Int32Value();
  int64_t length = info[2].As<Napi::Number>().Int64Value();
  int64_t offset = info[3].As<Napi::Number>().Int64Value();
  if (bufs_ == nullptr || tag < 0 || tag >= depth_ || length < 0 || length > static_cast<int64_t>(buf_bytes_) || offset < 0)
    throw Napi::RangeError::New(env, "writeTag: tag, length or offset out of range");
  WriteFully(env, fd, Buf(static_cast<int>(tag)), static_cast<size_t>(length), offset);
  return Napi::Number::New(env, static_cast<double>(length));
}

// copy(fromFd, fromOffset, toFd, toOffset, length): synchronous pread/pwrite through a page-aligned bounce
// buffer (O_DIRECT descriptors take it), for the part of a shared segment a copy-on-write claim's write leaves
// (io/claim-ring.ts). Throws a VdiskError (syscall 'pread' or 'pwrite'); a read past the end is an error.
Napi::Value UblkQueue::Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (size_t i = 0; i < 5; i++)
    if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(env, "copy(fromFd, fromOffset, toFd, toOffset, length) needs five numbers");
  int from_fd = info[0].As<Napi::Number>().Int32Value();
  int64_t from_off = info[1].As<Napi::Number>().Int64Value();
  int to_fd = info[2].As<Napi::Number>().Int32Value();
  int64_t to_off = info[3].As<Napi::Number>().Int64Value();
  int64_t length = info[4].As<Napi::Number>().Int64Value();
  if (from_off < 0 || to_off < 0 || length < 0) throw Napi::RangeError::New(env, "copy: negative offset or length");
  if (!scratch_) {
    void* p = mmap(nullptr, buf_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) ThrowSysError(env, errno, "mmap", "copy buffer");
    scratch_ = static_cast<uint8_t*>(p);
  }
  for (int64_t done = 0; done < length;) {
    size_t want = static_cast<size_t>(std::min<int64_t>(length - done, buf_bytes_));
    ReadFully(env, from_fd, scratch_, want, from_off + done);
    WriteFully(env, to_fd, scratch_, want, to_off + done);
    done += static_cast<int64_t>(want);
  }
  return env.Undefined();
}

Napi::Value UblkQueue::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}
