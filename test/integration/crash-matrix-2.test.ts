// The crash matrix's second half (snapshot, clone, migration, rm and attach commits, and the agent's
// failpoints): crash-matrix.test.ts with VDISK_CRASH_PART=2, in a file of its own so that CI runs the two
// halves side by side (one file took 935-1200 s).
process.env.VDISK_CRASH_PART = '2';
await import('./crash-matrix.test.js');
