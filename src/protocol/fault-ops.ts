// The op of a map fault (FaultArgs.op): what the request that faulted was doing. A wire value both sides
// use: the agent's queue workers set it (src/io/translator.ts) and the controller answers by it, so it lives
// here and the controller imports nothing from the hot path.
export const FAULT_READ = 0;
export const FAULT_WRITE = 1;
export const FAULT_DISCARD = 2;
/** A discard or write-zeroes covering a whole mapped segment: the controller may turn it to Zero and free it. */
export const FAULT_RECLAIM = 3;
