// Module entry: exports the control device, the queue, the error-class hook, the eventfd wake helper, an
// aligned O_DIRECT read and the batch ABI constants (checked against src/native/abi.ts at load).
// Context-aware: loads in every worker.
#include <napi.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "control.h"
#include "errors.h"
#include "queue.h"
#include "queue_abi.h"
#include "ublk_abi.h"

namespace {

// eventfdWrite(fd): wakes a queue worker blocked in run(). Safe from any thread; never blocks (EAGAIN on
// counter saturation means a wake is already pending).
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) < 0 && errno != EAGAIN) ThrowSysError(info.Env(), errno, "write", "eventfd");
  return info.Env().Undefined();
}

// eventfd(): a non-blocking eventfd for waking a queue worker; the caller closes it (fs.closeSync).
Napi::Value MakeEventfd(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowSysError(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// preadDirect(fd, length, offset) -> Buffer: length bytes at offset from a descriptor opened O_DIRECT, read into
// page-aligned memory (O_DIRECT's rule, which no JS allocation can promise) and copied out; zeros past the end.
// The agent reads container labels this way: a block device's page cache may hold what another host has since
// overwritten on the shared storage. Synchronous: a few KiB, where the caller already blocks.
Napi::Value PreadDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int64_t length = info[1].As<Napi::Number>().Int64Value();
  int64_t offset = info[2].As<Napi::Number>().Int64Value();
  constexpr int64_t kAlign = 4096;
  if (length <= 0 || length % kAlign != 0 || offset < 0 || offset % kAlign != 0 || length > (64 << 20)) {
    ThrowSysError(env, EINVAL, "pread", "preadDirect: length and offset must be multiples of 4096 (length up to 64 MiB)");
  }
  void* mem = nullptr;
  if (posix_memalign(&mem, kAlign, static_cast<size_t>(length)) != 0) ThrowSysError(env, ENOMEM, "posix_memalign");
  int64_t got = 0;
  while (got < length) {
    ssize_t n = pread(fd, static_cast<char*>(mem) + got, static_cast<size_t>(length - got), offset + got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      free(mem);
      ThrowSysError(env, err, "pread");
    }
    if (n == 0) break;
    got += n;
  }
  if (got < length) memset(static_cast<char*>(mem) + got, 0, static_cast<size_t>(length - got));
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(env, static_cast<uint8_t*>(mem), static_cast<size_t>(length));
  free(mem);
  return out;
}

// fallocate(fd, mode, offset, length) -> Promise<void>: the controller zeroes segments before it maps them.
// On libuv's thread pool, never on the event loop: ZERO_RANGE over a terabyte, or on a block device whose
// driver writes the zeros, can take far longer than the ~50 ms a request may hold the loop.
class FallocateWorker : public Napi::AsyncWorker {
 public:
  FallocateWorker(Napi::Env env, int fd, int mode, int64_t offset, int64_t length)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), mode_(mode), offset_(offset), length_(length) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    int rc;
    do {
      rc = fallocate(fd_, mode_, offset_, length_);
    } while (rc < 0 && errno == EINTR);
    err_ = rc < 0 ? errno : 0;
  }
  void OnOK() override {
    if (err_ == 0) deferred_.Resolve(Env().Undefined());
    else deferred_.Reject(MakeSysError(Env(), err_, "fallocate"));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_, mode_;
  int64_t offset_, length_;
  int err_ = 0;
};

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  auto* w = new FallocateWorker(info.Env(), info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                                info[2].As<Napi::Number>().Int64Value(), info[3].As<Napi::Number>().Int64Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("READY_STRIDE", kReadyStride);
  c.Set("PLAN_STRIDE", kPlanStride);
  c.Set("STATUS_LEN", kStatusLen);
  c.Set("OP_READ", static_cast<int>(kOpRead));
  c.Set("OP_WRITE", static_cast<int>(kOpWrite));
  c.Set("OP_FDATASYNC", static_cast<int>(kOpFdatasync));
  c.Set("OP_FALLOCATE", static_cast<int>(kOpFallocate));
  c.Set("OP_ZERO", static_cast<int>(kOpZero));
  c.Set("OP_COMMIT", static_cast<int>(kOpCommit));
  c.Set("COMPLETED_IO_ERROR", static_cast<double>(kCompletedIoError));
  c.Set("UBLK_MAX_QUEUE_DEPTH", UBLK_MAX_QUEUE_DEPTH);
  c.Set("UBLK_F_CMD_IOCTL_ENCODE", Napi::BigInt::New(env, static_cast<uint64_t>(UBLK_F_CMD_IOCTL_ENCODE)));
  return c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  exports.Set("UblkControl", UblkControl::Init(env));
  exports.Set("UblkQueue", UblkQueue::Init(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("eventfd", Napi::Function::New(env, MakeEventfd));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate));
  exports.Set("preadDirect", Napi::Function::New(env, PreadDirect));
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(vdisk, Init)
