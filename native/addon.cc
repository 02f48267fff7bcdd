// Module entry: exports the control device, the queue, the error-class hook, the eventfd wake helper and
// the batch ABI constants (checked against src/native/abi.ts at load). Context-aware: loads in every worker.
#include <napi.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

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
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(vdisk, Init)
