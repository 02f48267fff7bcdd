// UblkControl: the /dev/ublk-control device. Every command runs on a thread of its own (ublk blocks the
// submitting task inside io_uring_enter for START_DEV, END_USER_RECOVERY, STOP_DEV and DEL_DEV), so the JS
// event loop and queue threads never block; each method returns a Promise. Timeouts are the caller's policy.
#pragma once
#include <napi.h>

class UblkControl : public Napi::ObjectWrap<UblkControl> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit UblkControl(const Napi::CallbackInfo& info);
  ~UblkControl() override;

 private:
  Napi::Value Command(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  int fd_ = -1;
};
