// One error shape crosses the addon boundary: the TypeScript VdiskError (registered at load time through
// setErrorClass), carrying code ('EINVAL'), errno (negative, as Node's own system errors do) and syscall.
#pragma once
#include <napi.h>
#include <string>

struct AddonData {
  Napi::FunctionReference error_class;
  Napi::FunctionReference queue_ctor;
};

// err is a positive errno value.
Napi::Value MakeSysError(Napi::Env env, int err, const std::string& syscall, const std::string& detail = "");
[[noreturn]] void ThrowSysError(Napi::Env env, int err, const std::string& syscall, const std::string& detail = "");
Napi::Value SetErrorClass(const Napi::CallbackInfo& info);
