// gradscope calls Glibc directly (pread and fstat on checkpoints, poll on its workers' pipes,
// setrlimit to cap their memory): it is built and tested on Linux only.
#if !os(Linux)
#error("gradscope builds on Linux only (see the README, \"Layout of this repository\")")
#endif
