//! The launch environment (torchrun, torchrun's agent store, SLURM), and Gloo process groups
//! of two ranks on threads of this process: all-reduce, broadcast, barrier, gradient buckets.

use h5gpt_train::distributed::{
    first_slurm_host, Backend, GradBuckets, Launch, Launcher, ProcessGroup, DEFAULT_PORT,
};
use std::collections::HashMap;
use std::time::Duration;
use tch::{Kind, Tensor};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn no_launch_variables_mean_a_single_process() {
    assert_eq!(Launch::from_vars(vars(&[])).unwrap(), None);
    // srun with one task is a single process too.
    let one_task = vars(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]);
    assert_eq!(Launch::from_vars(one_task).unwrap(), None);
}

#[test]
fn torchrun_variables_give_rank_world_and_store() {
    let launch = Launch::from_vars(vars(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node7"),
        ("MASTER_PORT", "1234"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        launch,
        Launch {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            master_addr: "node7".into(),
            master_port: 1234,
            store_prefix: String::new(),
            launcher: Launcher::Env,
        }
    );
    assert!(!launch.hosts_store());
    let rank0 = Launch::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "2")]))
        .unwrap()
        .unwrap();
    assert!(rank0.hosts_store());
    assert_eq!(
        (rank0.master_addr.as_str(), rank0.master_port),
        ("127.0.0.1", DEFAULT_PORT)
    );
}

#[test]
fn torchrun_agent_store_makes_every_rank_a_client_under_the_attempt_prefix() {
    let launch = Launch::from_vars(vars(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29400"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(launch.launcher, Launcher::TorchrunAgent);
    assert_eq!(launch.store_prefix, "/worker/attempt_2");
    assert!(!launch.hosts_store(), "the agent serves the store");
}

#[test]
fn slurm_variables_take_the_first_node_and_port_29500() {
    let launch = Launch::from_vars(vars(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_STEP_NODELIST", "gpu[007-010,12],login1"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (
            launch.rank,
            launch.world_size,
            launch.local_rank,
            launch.master_addr.as_str(),
            launch.master_port,
            launch.launcher
        ),
        (5, 16, 1, "gpu007", DEFAULT_PORT, Launcher::Slurm)
    );
}

#[test]
fn slurm_node_lists_expand_to_their_first_host() {
    for (list, first) in [
        ("node1", "node1"),
        ("node1,node2", "node1"),
        ("node[3-5]", "node3"),
        ("node[09,11-12],x", "node09"),
        ("rack[2-3]n[01-04]", "rack2n01"),
    ] {
        assert_eq!(first_slurm_host(list).as_deref(), Some(first), "{list}");
    }
    assert_eq!(first_slurm_host(""), None);
}

#[test]
fn bad_launch_variables_are_errors_that_name_them() {
    let e = Launch::from_vars(vars(&[("WORLD_SIZE", "2")])).unwrap_err();
    assert!(e.to_string().contains("RANK"), "{e}");
    let e = Launch::from_vars(vars(&[("WORLD_SIZE", "two"), ("RANK", "0")])).unwrap_err();
    assert!(e.to_string().contains("WORLD_SIZE"), "{e}");
    let e = Launch::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2")])).unwrap_err();
    assert!(e.to_string().contains("not below"), "{e}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `f(group)` on `world` threads, each one rank of a Gloo group on localhost.
fn on_ranks<T: Send + 'static>(
    world: usize,
    f: impl Fn(&ProcessGroup) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || {
                let launch = Launch::from_vars(vars(&[
                    ("RANK", &rank.to_string()),
                    ("WORLD_SIZE", &world.to_string()),
                    ("MASTER_ADDR", "127.0.0.1"),
                    ("MASTER_PORT", &port.to_string()),
                ]))
                .unwrap()
                .unwrap();
                let group =
                    ProcessGroup::connect(&launch, Backend::Gloo, None, Duration::from_secs(30))
                        .unwrap();
                assert_eq!((group.rank(), group.world_size()), (rank, world));
                f(&group)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn gloo_all_reduce_broadcast_and_barrier_on_two_ranks() {
    let results = on_ranks(2, |group| {
        let rank = group.rank() as f32;
        let sum = Tensor::from_slice(&[rank + 1.0, 10.0 * (rank + 1.0)]);
        group.all_reduce_sum(&sum).unwrap();
        let shared = Tensor::from_slice(&[rank + 5.0; 3]);
        group.broadcast(&shared, 1).unwrap();
        group.barrier().unwrap();
        (
            Vec::<f32>::try_from(&sum).unwrap(),
            Vec::<f32>::try_from(&shared).unwrap(),
        )
    });
    for (sum, shared) in results {
        assert_eq!(sum, vec![3.0, 30.0], "1 + 2 on both ranks");
        assert_eq!(shared, vec![6.0; 3], "rank 1's values everywhere");
    }
}

#[test]
fn a_group_of_one_rank_works() {
    let results = on_ranks(1, |group| {
        let t = Tensor::from_slice(&[4.0f32]);
        group.all_reduce_sum(&t).unwrap();
        f32::try_from(&t).unwrap()
    });
    assert_eq!(results, vec![4.0]);
}

/// The gradients are views into the buckets (built before backward, as DDP does), so the
/// all-reduce works in place: averaged over the ranks, twice in a row after a zero_grad.
#[test]
fn grad_buckets_average_gradients_over_ranks_in_place() {
    let results = on_ranks(2, |group| {
        let rank = group.rank() as f64;
        // Three parameters; 64-byte buckets split them into two buckets.
        let params: Vec<Tensor> = [[2i64, 3], [4, 2], [1, 5]]
            .iter()
            .map(|shape| {
                Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu)).set_requires_grad(true)
            })
            .collect();
        let mut buckets = GradBuckets::new(&params, 64);
        assert_eq!(buckets.len(), 2);
        // Parameters 0 and 1 share the first bucket: their gradients are adjacent in it.
        let (g0, g1) = (params[0].grad(), params[1].grad());
        assert_eq!(
            g1.data_ptr() as usize,
            g0.data_ptr() as usize + 6 * 4,
            "gradients are views into one flat buffer"
        );
        let mut rounds = Vec::new();
        for round in 0..2 {
            buckets.zero_grad();
            let loss = params
                .iter()
                .enumerate()
                .map(|(i, p)| (p * (rank + 1.0) * (i as f64 + 1.0)).sum(Kind::Float))
                .fold(
                    Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                    |a, b| a + b,
                );
            loss.backward();
            assert_eq!(
                params[0].grad().data_ptr(),
                g0.data_ptr(),
                "round {round}: backward wrote into the bucket, not a new tensor"
            );
            buckets.all_reduce_mean(group).unwrap();
            rounds.push(
                params
                    .iter()
                    .map(|p| Vec::<f32>::try_from(p.grad().reshape([-1])).unwrap())
                    .collect::<Vec<_>>(),
            );
        }
        rounds
    });
    for rounds in results {
        for grads in rounds {
            for (i, g) in grads.iter().enumerate() {
                // mean over ranks of (rank + 1) * (i + 1) = 1.5 * (i + 1)
                let want = 1.5 * (i as f32 + 1.0);
                assert!(g.iter().all(|&x| x == want), "parameter {i}: {g:?}");
            }
        }
    }
}

#[test]
fn a_rank_that_never_comes_fails_the_rendezvous_within_the_timeout() {
    let launch = Launch::from_vars(vars(&[
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_PORT", &free_port().to_string()),
    ]))
    .unwrap()
    .unwrap();
    let started = std::time::Instant::now();
    let e = match ProcessGroup::connect(&launch, Backend::Gloo, None, Duration::from_secs(1)) {
        Ok(_) => panic!("rank 1 never started"),
        Err(e) => e.to_string(),
    };
    assert!(started.elapsed() < Duration::from_secs(20), "{e}");
    assert!(e.contains("rank 0 of 2") && e.contains("timeout"), "{e}");
    assert!(!e.contains("frame #"), "no C++ stack trace: {e}");
}
