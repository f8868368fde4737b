// Clang's thread-safety annotations (-Wthread-safety), as macros that compile to nothing on
// other compilers. A field marked FERRY_GUARDED_BY(mu_) may only be touched with mu_ held;
// clang checks it at compile time.
//
// Reference: https://clang.llvm.org/docs/ThreadSafetyAnalysis.html
#ifndef FERRY_BASE_THREAD_ANNOTATIONS_H_
#define FERRY_BASE_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define FERRY_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define FERRY_THREAD_ANNOTATION_(x)
#endif

#define FERRY_GUARDED_BY(x) FERRY_THREAD_ANNOTATION_(guarded_by(x))
#define FERRY_PT_GUARDED_BY(x) FERRY_THREAD_ANNOTATION_(pt_guarded_by(x))
#define FERRY_REQUIRES(...) FERRY_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define FERRY_EXCLUDES(...) FERRY_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define FERRY_NO_THREAD_SAFETY_ANALYSIS FERRY_THREAD_ANNOTATION_(no_thread_safety_analysis)

#endif  // FERRY_BASE_THREAD_ANNOTATIONS_H_
