# RcppML 1.0.0 outputs used by tests/api/test_consensus.py and tests/api/test_divisive.py.
# Run from this directory with RcppML 1.0.0 installed (zdebruine/RcppML @ df69ddd):
#   Rscript make_fixtures.R
# Writes small CSV files (see README.md here). Threads: 1, so that the runs are reproducible.
suppressMessages({library(RcppML); library(Matrix)})
options(RcppML.gpu = FALSE)
data(aml)

# consensus_nmf clusters the ROWS of its input: aml is regions x samples, so pass t(aml)
for (k in c(3)) {
  res <- consensus_nmf(t(aml), k = k, reps = 20, seed = 1, threads = 1)
  write.csv(data.frame(sample = seq_len(ncol(aml)) - 1L, cluster = res$clusters),
            sprintf("aml_consensus_k%d_reps20_seed1.csv", k), row.names = FALSE)
  cat("aml consensus k", k, "cophenetic", res$cophenetic, "\n")
}

# bipartition of all aml samples (dense input), seed 0 (RcppML's default)
bp <- bipartition(aml, tol = 1e-5, nonneg = TRUE, seed = 0, calc_dist = TRUE)
write.csv(data.frame(sample = seq_len(ncol(aml)) - 1L, v = bp$v),
          "aml_bipartition_v.csv", row.names = FALSE)
write.csv(data.frame(dist = bp$dist, size1 = bp$size1, size2 = bp$size2),
          "aml_bipartition_stats.csv", row.names = FALSE)

# dclust on pbmc3k (raw counts from the package's .spz), min_samples = 100, seed 0
data(pbmc3k)
tmp <- tempfile(fileext = ".spz"); writeBin(pbmc3k, tmp)
A <- st_read(tmp)
cl <- dclust(A, min_samples = 100, min_dist = 0, seed = 0, threads = 1)
leaf <- integer(ncol(A))
for (i in seq_along(cl)) leaf[cl[[i]]$samples + 1L] <- i - 1L
write.csv(data.frame(leaf = leaf), "pbmc3k_dclust_min100_leaf.csv", row.names = FALSE)
write.csv(data.frame(index = seq_along(cl) - 1L,
                     id = vapply(cl, function(x) x$id, ""),
                     size = vapply(cl, function(x) as.integer(x$size), 0L)),
          "pbmc3k_dclust_min100_ids.csv", row.names = FALSE)
cat("pbmc3k dclust leaves", length(cl), "\n")
