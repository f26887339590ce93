// The one place that knows which instruction sets this build may target. x86-64 builds carry
// AVX2 / AVX-512 variants of the hot loops, chosen once at load time by CPU feature checks;
// every other target (aarch64: Apple Silicon, Graviton) compiles only the portable loops.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define HARDMINE_X86 1
/// True when the CPU running this process has every named x86 feature.
#define HARDMINE_CPU_HAS(feature) __builtin_cpu_supports(feature)
#else
#define HARDMINE_CPU_HAS(feature) false
#endif
