//! The machine a figure was measured on, as results state it: CPU model, cores and the
//! instruction-set flags that change speed (AVX2 vs AVX-512 VNNI changes INT8 by 2×).

/// This machine's CPU, read from `/proc/cpuinfo` (empty fields elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    /// Every flag the CPU lists.
    pub flags: Vec<String>,
}

impl Machine {
    pub fn this() -> Self {
        Self::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    pub fn from_cpuinfo(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        Self {
            cpu: field("model name").unwrap_or_else(|| "unknown CPU".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            flags: field("flags")
                .map(|f| f.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// The flags that change measured speed: fma, avx2, the AVX-512 family and AMX.
    pub fn speed_flags(&self) -> Vec<&str> {
        self.flags
            .iter()
            .map(String::as_str)
            .filter(|f| {
                *f == "avx2" || *f == "fma" || f.starts_with("avx512") || f.starts_with("amx")
            })
            .collect()
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// `CPU, N cores, flags a b c`: one line for a result's provenance.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores, flags {}",
            self.cpu,
            self.cores,
            self.speed_flags().join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_speed_flags_from_cpuinfo() {
        let m = Machine::from_cpuinfo(
            "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile\n",
        );
        assert_eq!(m.cpu, "AMD EPYC 9R14");
        assert_eq!(
            m.speed_flags(),
            ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
        );
        assert!(m.has("sse2") && !m.has("avx"));
        assert_eq!(Machine::from_cpuinfo("").cpu, "unknown CPU");
    }
}
