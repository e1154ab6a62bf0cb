"""NegGen's learning library: plain PyTorch / NumPy / SciPy, no pipeline or orchestration imports.

- config.TrainConfig: hyper-parameters with the paper's defaults
- data.InteractionData: train/valid/test CSR matrices and LightGCN's normalised graph
- models: the Recommender contract, BPR-MF and LightGCN, build_model by name
- sampling.UniformNegativeSampler: vectorised uniform negatives
- samplers: negative-sampling strategies (uniform, DNS(M, N), MixGCF, DENS, AHNS) the trainer plugs in
- evaluate.evaluate: full-ranking Recall@K / NDCG@K (modes "mmrec" and "strict")
- trainer.Trainer: early-stopped, checkpointed, resumable training
- checkpoint.save_model / load_model: best weights in safetensors plus a JSON description
"""
