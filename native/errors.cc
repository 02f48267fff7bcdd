// Builds VdiskError instances (or plain Errors before the class is registered) from errno values.
#include "errors.h"

#include <cstring>

Napi::Value MakeSysError(Napi::Env env, int err, const std::string& syscall, const std::string& detail) {
  const char* name = strerrorname_np(err);
  std::string code = name ? name : ("E" + std::to_string(err));
  std::string message = syscall + (detail.empty() ? "" : " " + detail) + ": " + strerror(err) + " (" + code + ")";
  Napi::Object props = Napi::Object::New(env);
  props.Set("code", code);
  props.Set("errno", -err);
  props.Set("syscall", syscall);
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data && !data->error_class.IsEmpty()) {
    return data->error_class.New({Napi::String::New(env, message), props});
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", props.Get("code"));
  e.Set("errno", props.Get("errno"));
  e.Set("syscall", props.Get("syscall"));
  return e.Value();
}

void ThrowSysError(Napi::Env env, int err, const std::string& syscall, const std::string& detail) {
  throw Napi::Error(env, MakeSysError(env, err, syscall, detail));
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setErrorClass(ctor) needs a constructor");
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  data->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}
