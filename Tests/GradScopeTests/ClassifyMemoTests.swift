import ElementTypes
import GradScopeModel
import GradScopeSources
import Testing

/// `GenericLayout.classify` remembers its answers (a run's saves hold the same arrays file after file):
/// a remembered answer is the one computed afresh, for every argument, past the memo's limit too.
@Suite("Generic layout classification, remembered")
struct ClassifyMemoTests {
    func tensor(_ answer: GenericLayout.Classified) -> TensorRef? {
        if case .tensor(let tensor) = answer { return tensor }
        return nil
    }

    @Test func rememberedAnswersAreTheArgumentsOwn() throws {
        let count = GenericLayout.classifiedLimit + 100
        for round in 0..<2 {
            for index in 0..<count {
                let name = "blocks.\(index).mlp.weight"
                let weight = tensor(
                    GenericLayout.classify(
                        relative: "model/\(name)", path: "/model/\(name)", shape: [8, 4], type: .float32, keras: false, optimizer: nil))
                let gradient = tensor(
                    GenericLayout.classify(
                        relative: "grads/\(name)", path: "/grads/\(name)", shape: [8, 4], type: .float32, keras: false, optimizer: nil))
                #expect(weight?.name == "model/\(name)" || weight?.name == name, "round \(round)")
                #expect(weight?.role == .weight)
                #expect(gradient?.role == .gradient)
                #expect(gradient?.name == weight?.name)
                #expect(weight?.shape == [8, 4])
            }
        }
        // The same path with another shape, type or layout is classified for those.
        let counter = GenericLayout.classify(
            relative: "model/x", path: "/model/x", shape: [3], type: .integer(bits: 64, signed: true), keras: false, optimizer: nil)
        let floats = GenericLayout.classify(relative: "model/x", path: "/model/x", shape: [3], type: .float32, keras: false, optimizer: nil)
        #expect(tensor(counter) == nil)
        #expect(tensor(floats)?.shape == [3])
        let keras = tensor(
            GenericLayout.classify(relative: "d/kernel", path: "/d/kernel", shape: [4, 8], type: .float32, keras: true, optimizer: nil))
        let torch = tensor(
            GenericLayout.classify(relative: "d/kernel", path: "/d/kernel", shape: [4, 8], type: .float32, keras: false, optimizer: nil))
        #expect(keras?.unitAxis != torch?.unitAxis)
    }
}
