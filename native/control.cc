// Control commands: marshal JS objects into the kernel's structs (layouts from <linux/ublk_cmd.h>), run
// the uring_cmd on a detached thread with a private SQE128 ring, and settle a Promise with the result.
#include "control.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "uring.h"
#include "ublk_abi.h"

namespace {

#ifndef ENOTSUPP
#define ENOTSUPP 524  // kernel-internal, but ublk on 6.1 returns it for unknown opcodes
#endif

// 0 unknown, 1 encoded (6.4+), 2 legacy. A kernel-wide property, learned from the first command.
std::atomic<int> g_opcode_mode{0};

struct CmdSpec {
  const char* name;
  uint32_t legacy;
  uint32_t encoded;
};

const CmdSpec kCmds[] = {
    {"UBLK_U_CMD_GET_DEV_INFO", UBLK_CMD_GET_DEV_INFO, UBLK_U_CMD_GET_DEV_INFO},
    {"UBLK_U_CMD_ADD_DEV", UBLK_CMD_ADD_DEV, UBLK_U_CMD_ADD_DEV},
    {"UBLK_U_CMD_DEL_DEV", UBLK_CMD_DEL_DEV, UBLK_U_CMD_DEL_DEV},
    {"UBLK_U_CMD_START_DEV", UBLK_CMD_START_DEV, UBLK_U_CMD_START_DEV},
    {"UBLK_U_CMD_STOP_DEV", UBLK_CMD_STOP_DEV, UBLK_U_CMD_STOP_DEV},
    {"UBLK_U_CMD_SET_PARAMS", UBLK_CMD_SET_PARAMS, UBLK_U_CMD_SET_PARAMS},
    {"UBLK_U_CMD_GET_PARAMS", UBLK_CMD_GET_PARAMS, UBLK_U_CMD_GET_PARAMS},
    {"UBLK_U_CMD_START_USER_RECOVERY", UBLK_CMD_START_USER_RECOVERY, UBLK_U_CMD_START_USER_RECOVERY},
    {"UBLK_U_CMD_END_USER_RECOVERY", UBLK_CMD_END_USER_RECOVERY, UBLK_U_CMD_END_USER_RECOVERY},
    {"UBLK_U_CMD_GET_FEATURES", UBLK_CMD_GET_FEATURES, UBLK_U_CMD_GET_FEATURES},
};

enum class Payload { kNone, kDevInfo, kParams, kFeatures };

struct Job {
  const CmdSpec* spec;
  int fd;  // dup of the control fd, owned by the job
  ublksrv_ctrl_cmd cmd;
  Payload payload = Payload::kNone;
  std::vector<uint8_t> buf;
  int result = 0;
  Napi::Promise::Deferred deferred;
  Napi::ThreadSafeFunction tsfn;
  explicit Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

int RunOnce(int fd, uint32_t op, ublksrv_ctrl_cmd cmd) {
  Ring ring;
  int r = ring.Setup(4, IORING_SETUP_SQE128);
  if (r < 0) return r;
  io_uring_sqe* sqe = ring.GetSqe();
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  memcpy(sqe->cmd, &cmd, sizeof cmd);
  r = ring.Submit(1);
  while (r == -EINTR) r = ring.Submit(1);
  if (r < 0) return r;
  io_uring_cqe* cqe = ring.PeekCqe();
  while (!cqe) {
    r = ring.Submit(1);
    if (r < 0 && r != -EINTR) return r;
    cqe = ring.PeekCqe();
  }
  int res = cqe->res;
  ring.Seen();
  return res;
}

bool LooksUnsupported(int res) {
  return res == -ENOTSUPP || res == -EOPNOTSUPP || res == -ENOTTY || res == -EINVAL || res == -ENODEV;
}

void Execute(Job* job) {
  if (!job->buf.empty()) job->cmd.addr = reinterpret_cast<uint64_t>(job->buf.data());
  int mode = g_opcode_mode.load();
  if (mode == 2) {
    job->result = RunOnce(job->fd, job->spec->legacy, job->cmd);
  } else {
    job->result = RunOnce(job->fd, job->spec->encoded, job->cmd);
    if (mode == 0 && LooksUnsupported(job->result) && job->spec->legacy != UBLK_CMD_GET_FEATURES) {
      int legacy = RunOnce(job->fd, job->spec->legacy, job->cmd);
      if (legacy >= 0) g_opcode_mode.store(2);
      job->result = legacy;
    } else if (job->result >= 0) {
      g_opcode_mode.store(1);
    }
  }
  close(job->fd);
}

template <typename T>
T Read(const std::vector<uint8_t>& b, size_t off) {
  T v;
  memcpy(&v, b.data() + off, sizeof v);
  return v;
}

Napi::Value DevInfoToJs(Napi::Env env, const std::vector<uint8_t>& b) {
  ublksrv_ctrl_dev_info info;
  memcpy(&info, b.data(), sizeof info);
  Napi::Object o = Napi::Object::New(env);
  o.Set("nrHwQueues", info.nr_hw_queues);
  o.Set("queueDepth", info.queue_depth);
  o.Set("state", info.state);
  o.Set("maxIoBufBytes", info.max_io_buf_bytes);
  o.Set("devId", info.dev_id);
  o.Set("ublksrvPid", info.ublksrv_pid);
  o.Set("flags", Napi::BigInt::New(env, static_cast<uint64_t>(info.flags)));
  o.Set("ublksrvFlags", Napi::BigInt::New(env, static_cast<uint64_t>(info.ublksrv_flags)));
  // owner_uid/owner_gid (6.3+) occupy what the 6.1 header calls reserved0.
  o.Set("ownerUid", Read<uint32_t>(b, 40));
  o.Set("ownerGid", Read<uint32_t>(b, 44));
  return o;
}

Napi::Value ParamsToJs(Napi::Env env, const std::vector<uint8_t>& b) {
  ublk_params p;
  memcpy(&p, b.data(), sizeof p);
  Napi::Object o = Napi::Object::New(env);
  o.Set("types", p.types);
  if (p.types & UBLK_PARAM_TYPE_BASIC) {
    Napi::Object basic = Napi::Object::New(env);
    basic.Set("attrs", p.basic.attrs);
    basic.Set("logicalBsShift", p.basic.logical_bs_shift);
    basic.Set("physicalBsShift", p.basic.physical_bs_shift);
    basic.Set("ioOptShift", p.basic.io_opt_shift);
    basic.Set("ioMinShift", p.basic.io_min_shift);
    basic.Set("maxSectors", p.basic.max_sectors);
    basic.Set("chunkSectors", p.basic.chunk_sectors);
    basic.Set("devSectors", static_cast<double>(p.basic.dev_sectors));
    basic.Set("virtBoundaryMask", static_cast<double>(p.basic.virt_boundary_mask));
    o.Set("basic", basic);
  }
  if (p.types & UBLK_PARAM_TYPE_DISCARD) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("discardAlignment", p.discard.discard_alignment);
    d.Set("discardGranularity", p.discard.discard_granularity);
    d.Set("maxDiscardSectors", p.discard.max_discard_sectors);
    d.Set("maxWriteZeroesSectors", p.discard.max_write_zeroes_sectors);
    d.Set("maxDiscardSegments", p.discard.max_discard_segments);
    o.Set("discard", d);
  }
  return o;
}

uint32_t U32(Napi::Object o, const char* key, uint32_t def = 0) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : def;
}

uint64_t U64(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return v.IsNumber() ? static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue()) : 0;
}

std::vector<uint8_t> ParamsFromJs(Napi::Object o) {
  ublk_params p;
  memset(&p, 0, sizeof p);
  p.len = sizeof p;
  Napi::Value bv = o.Get("basic");
  if (bv.IsObject()) {
    Napi::Object b = bv.As<Napi::Object>();
    p.types |= UBLK_PARAM_TYPE_BASIC;
    p.basic.attrs = U32(b, "attrs");
    p.basic.logical_bs_shift = static_cast<uint8_t>(U32(b, "logicalBsShift", 9));
    p.basic.physical_bs_shift = static_cast<uint8_t>(U32(b, "physicalBsShift", 12));
    p.basic.io_opt_shift = static_cast<uint8_t>(U32(b, "ioOptShift", 12));
    p.basic.io_min_shift = static_cast<uint8_t>(U32(b, "ioMinShift", 9));
    p.basic.max_sectors = U32(b, "maxSectors");
    p.basic.chunk_sectors = U32(b, "chunkSectors");
    p.basic.dev_sectors = U64(b, "devSectors");
    p.basic.virt_boundary_mask = U64(b, "virtBoundaryMask");
  }
  Napi::Value dv = o.Get("discard");
  if (dv.IsObject()) {
    Napi::Object d = dv.As<Napi::Object>();
    p.types |= UBLK_PARAM_TYPE_DISCARD;
    p.discard.discard_alignment = U32(d, "discardAlignment");
    p.discard.discard_granularity = U32(d, "discardGranularity");
    p.discard.max_discard_sectors = U32(d, "maxDiscardSectors");
    p.discard.max_write_zeroes_sectors = U32(d, "maxWriteZeroesSectors");
    p.discard.max_discard_segments = static_cast<uint16_t>(U32(d, "maxDiscardSegments", 1));
  }
  std::vector<uint8_t> buf(sizeof p);
  memcpy(buf.data(), &p, sizeof p);
  return buf;
}

void Settle(Napi::Env env, Napi::Function, Job* job) {
  if (env != nullptr) {
    if (job->result < 0) {
      job->deferred.Reject(MakeSysError(env, -job->result, job->spec->name, "dev " + std::to_string(job->cmd.dev_id)));
    } else {
      switch (job->payload) {
        case Payload::kDevInfo: job->deferred.Resolve(DevInfoToJs(env, job->buf)); break;
        case Payload::kParams: job->deferred.Resolve(ParamsToJs(env, job->buf)); break;
        case Payload::kFeatures:
          job->deferred.Resolve(Napi::BigInt::New(env, Read<uint64_t>(job->buf, 0)));
          break;
        default: job->deferred.Resolve(Napi::Number::New(env, job->result));
      }
    }
  }
  job->tsfn.Release();
  delete job;
}

}  // namespace

Napi::Function UblkControl::Init(Napi::Env env) {
  return DefineClass(env, "UblkControl",
                     {InstanceMethod<&UblkControl::Command>("command"), InstanceMethod<&UblkControl::Close>("close")});
}

UblkControl::UblkControl(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UblkControl>(info) {
  std::string path = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "/dev/ublk-control";
  fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) ThrowSysError(info.Env(), errno, "open", path);
}

UblkControl::~UblkControl() {
  if (fd_ >= 0) close(fd_);
}

Napi::Value UblkControl::Close(const Napi::CallbackInfo& info) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  return info.Env().Undefined();
}

// command(name, devId, arg?): name is the kernel's UBLK_U_CMD_* name. arg: dev_info object (ADD_DEV),
// params object (SET_PARAMS), pid (START_DEV, END_USER_RECOVERY).
Napi::Value UblkControl::Command(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (fd_ < 0) ThrowSysError(env, EBADF, "ublk control", "closed");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  const CmdSpec* spec = nullptr;
  for (const CmdSpec& s : kCmds)
    if (name == s.name) spec = &s;
  if (!spec) throw Napi::TypeError::New(env, "unknown ublk control command " + name);
  uint32_t dev_id = info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0xffffffffu;

  Job* job = new Job(env);
  job->spec = spec;
  memset(&job->cmd, 0, sizeof job->cmd);
  job->cmd.dev_id = dev_id;
  job->cmd.queue_id = 0xffff;
  uint32_t op = spec->legacy;
  if (op == UBLK_CMD_ADD_DEV) {
    Napi::Object o = info[2].As<Napi::Object>();
    ublksrv_ctrl_dev_info di;
    memset(&di, 0, sizeof di);
    di.nr_hw_queues = static_cast<uint16_t>(U32(o, "nrHwQueues", 1));
    di.queue_depth = static_cast<uint16_t>(U32(o, "queueDepth", 128));
    di.max_io_buf_bytes = U32(o, "maxIoBufBytes", 512 << 10);
    di.dev_id = dev_id;
    di.flags = U64(o, "flags");
    di.ublksrv_flags = U64(o, "ublksrvFlags");
    job->buf.resize(sizeof di);
    memcpy(job->buf.data(), &di, sizeof di);
    job->payload = Payload::kDevInfo;
  } else if (op == UBLK_CMD_GET_DEV_INFO) {
    job->buf.resize(sizeof(ublksrv_ctrl_dev_info));
    job->payload = Payload::kDevInfo;
  } else if (op == UBLK_CMD_SET_PARAMS) {
    job->buf = ParamsFromJs(info[2].As<Napi::Object>());
  } else if (op == UBLK_CMD_GET_PARAMS) {
    job->buf.resize(sizeof(ublk_params));
    uint32_t len = sizeof(ublk_params);
    memcpy(job->buf.data(), &len, sizeof len);
    job->payload = Payload::kParams;
  } else if (op == UBLK_CMD_GET_FEATURES) {
    job->buf.resize(8);
    job->payload = Payload::kFeatures;
  } else if (op == UBLK_CMD_START_DEV || op == UBLK_CMD_END_USER_RECOVERY) {
    job->cmd.data[0] = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : getpid();
  }
  job->cmd.len = static_cast<uint16_t>(job->buf.size());

  job->fd = dup(fd_);
  if (job->fd < 0) {
    int e = errno;
    delete job;
    ThrowSysError(env, e, "dup");
  }
  Napi::Promise promise = job->deferred.Promise();
  // Unreferenced: a kernel command that never returns must not pin the process; callers hold a timer.
  job->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "ublk-control", 0, 1);
  job->tsfn.Unref(env);
  std::thread([job] {
    Execute(job);
    job->tsfn.BlockingCall(job, Settle);
  }).detach();
  return promise;
}
