// The batch contract between a queue worker (TypeScript) and UblkQueue (C++): record layouts of the ready
// buffer, the plan buffer and the status words. Mirrored in src/native/abi.ts; the addon exports these
// values and the TypeScript side checks them at load, so the two cannot drift apart silently.
#pragma once

#include <cstdint>

// ready: Uint32Array, one record per request the kernel handed us.
constexpr int kReadyStride = 8;
constexpr int kReadyTag = 0, kReadyOpFlags = 1, kReadyNrSectors = 2, kReadySectorLo = 3, kReadySectorHi = 4;

// plan: Int32Array, one record per backing operation, grouped by tag and closed by a COMMIT record.
constexpr int kPlanStride = 8;
constexpr int kPlanOp = 0, kPlanTag = 1, kPlanFd = 2 /* COMMIT: result */, kPlanFlags = 3, kPlanBufOff = 4,
              kPlanLen = 5, kPlanOffLo = 6, kPlanOffHi = 7;
enum PlanOp : int {
  kOpRead = 1,       // pread(fd, tagbuf + bufOff, len, off); EOF reads as zeros
  kOpWrite = 2,      // pwritev2(fd, tagbuf + bufOff, len, off, flags = RWF_*)
  kOpFdatasync = 3,  // fdatasync(fd)
  kOpFallocate = 4,  // fallocate(fd, mode = flags, off, len)
  kOpZero = 5,       // memset(tagbuf + bufOff, 0, len), no syscall
  kOpCommit = 6,     // when the tag's operations finish: COMMIT_AND_FETCH with the first error, else result
};

// completed: Uint32Array of depth entries; run() lists there the tags it committed during that call, so the
// worker can tell when requests it planned have finished (the blocking flag waits for exactly that). A tag
// whose backing I/O failed (not one the plan failed on purpose) carries kCompletedIoError: the agent turns
// the segments of such a request to Error.
constexpr uint32_t kCompletedIoError = 0x80000000u;

// status: Int32Array written by run()/fetchAll().
constexpr int kStatusLen = 9;
constexpr int kStatusInKernel = 0, kStatusOwned = 1, kStatusInflight = 2, kStatusAborted = 3,
              kStatusWakeups = 4, kStatusLastError = 5, kStatusCompleted = 6 /* tags in the completed buffer */,
              kStatusBadRecords = 7 /* plan records refused since the queue was made */,
              kStatusFailed = 8 /* requests committed with an error since the queue was made */;
