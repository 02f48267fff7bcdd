// The ways vdisk waits: between retries (device nodes appearing, the controller answering, recovery), and one
// turn of the event loop between pieces of long controller work.
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** One turn of the event loop: long controller work takes one between pieces, so pings and faults are answered. */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
