// The one way vdisk waits between retries (device nodes appearing, the controller answering, recovery).
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
