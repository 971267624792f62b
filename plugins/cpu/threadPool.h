/*
 * threadPool.h: ParallelFor implementations for callers without a thread pool of their own (the tests, the
 * micro-benchmark, a plain C++ user). The ONNX Runtime op passes ORT's intra-op pool instead.
 *
 * ThreadPool keeps `threads - 1` workers alive and runs each parallel loop on them plus the calling thread; items
 * are handed out in small chunks from a shared counter, so uneven items (MRA block rows with different numbers of
 * selected tiles) balance themselves, and the caller never waits for a worker that has not woken up yet (it takes
 * the chunks itself). One loop runs at a time per pool; a loop called from inside a task of the same pool runs
 * serially on the calling thread rather than deadlock.
 */
#pragma once

#include "cpu/cpuKernels.h"

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tensorkiln::cpu
{

class ThreadPool
{
public:
    //! threads <= 0: one per hardware thread. threads == 1: no workers, every loop runs on the calling thread.
    explicit ThreadPool(int threads);
    ~ThreadPool();
    ThreadPool(ThreadPool const&) = delete;
    ThreadPool& operator=(ThreadPool const&) = delete;

    int threads() const noexcept
    {
        return static_cast<int>(mWorkers.size()) + 1;
    }

    //! Run task over [0, count) on the pool; returns when every item is done. See ParallelFor for `cost`.
    void run(int64_t count, double cost, std::function<void(int64_t, int64_t)> const& task);

    //! A ParallelFor that runs on this pool (the pool must outlive it).
    ParallelFor parallelFor();

private:
    struct Loop;
    void workerMain();
    static void drain(Loop& loop);

    std::vector<std::thread> mWorkers;
    std::mutex mMutex;
    std::condition_variable mWake;
    std::condition_variable mDone;
    std::mutex mRunMutex; //!< one loop at a time
    Loop* mLoop{nullptr};
    uint64_t mGeneration{0};
    int mActive{0}; //!< workers inside the current loop
    bool mStop{false};
};

} // namespace tensorkiln::cpu
