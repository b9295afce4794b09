import Foundation
import HDF5
import TestSupport
