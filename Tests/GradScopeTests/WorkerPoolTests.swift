import Foundation
import Testing
@testable import GradScope
#if canImport(Glibc)
import Glibc
#endif

@Suite("Worker processes: frames and scheduling")
struct WorkerPoolTests {
    @Test("every request is handed out once; each slot starts with a contiguous share in order")
    func indexQueueSharesAndSteals() {
        for (count, slots) in [(0, 2), (1, 2), (6, 2), (7, 3), (100, 4), (5, 8)] {
            let queue = IndexQueue(count: count, slots: slots)
            var taken: [[Int]] = Array(repeating: [], count: slots)
            // Slot 0 runs alone first: it works through its share, then steals from the others' ends.
            while let index = queue.next(slot: 0) {
                taken[0].append(index)
                if taken[0].count == count / slots { break }
            }
            var progress = true
            while progress {
                progress = false
                for slot in 0..<slots {
                    if let index = queue.next(slot: slot) {
                        taken[slot].append(index)
                        progress = true
                    }
                }
            }
            #expect(taken.flatMap { $0 }.sorted() == Array(0..<count), "count \(count), slots \(slots)")
            #expect(Array(taken[0].prefix(count / slots)) == Array(0..<(count / slots)))
        }
    }

    @Test("frames arrive whole whatever the pipe's chunking; a closed pipe ends; a silent one times out")
    func framesOverAPipe() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let big = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let frames = WorkerFrame.encode(kind: WorkerFrame.marker, payload: Data("reading /w".utf8))
            + WorkerFrame.encode(kind: WorkerFrame.answer, payload: big)
            + WorkerFrame.encode(kind: WorkerFrame.answer, payload: Data())
        let writer = fds[1]
        let sending = Thread {
            // In pieces of odd sizes, with pauses, as a busy worker would write.
            var offset = 0
            var size = 1
            while offset < frames.count {
                let end = min(frames.count, offset + size)
                _ = WorkerFrame.write(frames.subdata(in: offset..<end), to: writer)
                offset = end
                size = size * 3 + 1
                usleep(200)
            }
        }
        sending.start()
        var reader = FrameReader(fd: fds[0])
        guard case .frame(let kind1, let payload1) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no first frame"); return
        }
        #expect(kind1 == WorkerFrame.marker && String(decoding: payload1, as: UTF8.self) == "reading /w")
        guard case .frame(let kind2, let payload2) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no second frame"); return
        }
        #expect(kind2 == WorkerFrame.answer && payload2 == big)
        guard case .frame(_, let payload3) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no third frame"); return
        }
        #expect(payload3.isEmpty)
        // Nothing more is written: the deadline passes.
        let start = FrameReader.now()
        guard case .timedOut = reader.next(deadline: start + 0.2) else { Issue.record("no time-out"); return }
        #expect(FrameReader.now() - start >= 0.19)
        close(writer)
        guard case .end = reader.next(deadline: FrameReader.now() + 10) else { Issue.record("no end"); return }
    }

    @Test("a frame announcing an absurd length is refused, not allocated")
    func hostileFrameLength() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        var bytes = Data([WorkerFrame.answer])
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.append(contentsOf: $0) }
        _ = WorkerFrame.write(bytes, to: fds[1])
        close(fds[1])
        var reader = FrameReader(fd: fds[0])
        guard case .malformed = reader.next(deadline: FrameReader.now() + 10) else { Issue.record("accepted"); return }
    }
}
