public enum GradScopeVersion { public static let string = "0.1.0" }
