# read_csc(dir): the dgCMatrix written by benchmarks/peers.py's dump_csc (dims.bin: rows, columns,
# non-zeros as int32; p.bin, i.bin: int32 column pointers and row indices; x.bin: float64
# values). Sourced by the rcppml_*.R scripts.
suppressMessages(library(Matrix))
read_csc <- function(dir) {
  dims <- readBin(file.path(dir, "dims.bin"), "integer", 3)
  new("dgCMatrix", Dim = dims[1:2],
      p = readBin(file.path(dir, "p.bin"), "integer", dims[2] + 1),
      i = readBin(file.path(dir, "i.bin"), "integer", dims[3]),
      x = readBin(file.path(dir, "x.bin"), "double", dims[3]))
}
